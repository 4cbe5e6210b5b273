import pytest

from edgetune.data import Example, Template
from edgetune.errors import DataError


def test_render_splits_input_and_template_parts():
    p = Template("{text} In summary, it was {mask}").render(Example("a fine film"))
    assert p.before == (("a fine film", True), (" In summary, it was", False))
    assert p.after == ()
    assert p.text_before == "a fine film In summary, it was"


def test_render_pair_and_extra_fields_and_text_after_mask():
    t = Template('{text} ? {mask} , {text_b} ("{word}")')
    p = t.render(Example("A man sleeps", "A person rests", extra={"word": "rest"}))
    assert p.text_before == "A man sleeps ?"
    assert p.text_after == ' , A person rests ("rest")'
    assert not t.mask_is_last


@pytest.mark.parametrize("bad", ["{text} no mask here", "{mask} {mask} {text}", "{mask} only", "{text {mask}"])
def test_malformed_templates_are_rejected(bad):
    with pytest.raises(DataError):
        Template(bad)


def test_missing_field_names_the_field():
    with pytest.raises(DataError, match="word"):
        Template("{text} {word} {mask}").render(Example("x"))


def test_prompt_key_distinguishes_mask_position():
    a = Template("{text} {mask} x").render(Example("t"))
    b = Template("{text} x {mask}").render(Example("t"))
    assert a.key() != b.key()
