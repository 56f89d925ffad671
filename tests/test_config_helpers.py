import pytest

from autolr_monai.config import flag


@pytest.mark.parametrize("value,expected", [(True, True), (False, False), ("false", False), ("True", True), ("0", False)])
def test_flag_accepts_booleans_and_their_spellings(value, expected):
    assert flag(value, "isample#enabled") is expected


def test_flag_rejects_anything_else():
    with pytest.raises(ValueError, match="isample#enabled must be true or false, got 'maybe'"):
        flag("maybe", "isample#enabled")


def test_unknown_keys_in_our_sections_are_refused_with_a_suggestion():
    from monai.bundle import ConfigParser

    from autolr_monai.config import check_section_keys
    from tests.conftest import REPO

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundle" / "configs" / "train.json"), str(REPO / "bundle" / "configs" / "demo.json")])
    check_section_keys(parser, ["isample", "autolr", "lr_schedule"])  # the bundle's own: fine
    parser.update({"isample#update_evry": 5})
    with pytest.raises(ValueError, match=r"section 'isample': unknown key 'update_evry' \(did you mean 'update_every'\?\)"):
        check_section_keys(parser, ["isample"])
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundle" / "configs" / "train.json"))
    parser.update({"autolr#perod": 3})
    with pytest.raises(ValueError, match=r"section 'autolr': unknown key 'perod' \(did you mean 'period'"):
        check_section_keys(parser, ["autolr"])


def test_short_errors_print_our_message_not_the_traceback(monkeypatch, capsys):
    import sys

    from autolr_monai.config import short_errors
    from autolr_monai.data import load_datalist

    monkeypatch.delenv("AUTOLR_TRACEBACK", raising=False)
    fallback = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: fallback.append(args))
    short_errors()
    try:  # as MONAI wraps a transform's error: our ValueError inside a RuntimeError
        try:
            load_datalist("/nowhere/datalist.json", "training")
        except FileNotFoundError as inner:
            raise RuntimeError("applying transform <LoadImaged>") from inner
    except RuntimeError as outer:
        sys.excepthook(type(outer), outer, outer.__traceback__)
    err = capsys.readouterr().err
    assert err.startswith("FileNotFoundError: datalist /nowhere/datalist.json does not exist")
    assert "AUTOLR_TRACEBACK=1" in err and "Traceback" not in err and not fallback
    try:  # an error not raised by this package keeps the full report
        {}["missing"]
    except KeyError as other:
        sys.excepthook(type(other), other, other.__traceback__)
    assert len(fallback) == 1 and isinstance(fallback[0][1], KeyError)
