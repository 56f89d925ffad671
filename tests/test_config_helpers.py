import pytest

from autolr_monai.config import flag


@pytest.mark.parametrize("value,expected", [(True, True), (False, False), ("false", False), ("True", True), ("0", False)])
def test_flag_accepts_booleans_and_their_spellings(value, expected):
    assert flag(value, "isample#enabled") is expected


def test_flag_rejects_anything_else():
    with pytest.raises(ValueError, match="isample#enabled must be true or false, got 'maybe'"):
        flag("maybe", "isample#enabled")
