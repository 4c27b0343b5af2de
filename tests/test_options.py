"""Option specs: one declaration -> flag, DFL-style prompt, saved JSON, resolution order."""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from dataclasses import dataclass

import pytest

from facelab.errors import UserError
from facelab.options import (
    add_option_flags, ask_option, given_from_namespace, option, option_specs, options_from_dict,
    options_to_dict, resolve_options, wait_for_enter,
)  # fmt: skip


@dataclass(frozen=True)
class Demo:
    resolution: int = option("Resolution", 128, min=64, max=640, help="face size in pixels", fixed=True)
    face_type: str = option("Face type", "wf", choices=("h", "mf", "f", "wf", "head"), fixed=True)
    autosave_minutes: float = option("Autosave every N minutes", 25.0, min=0.5, max=600)
    random_flip: bool = option("Flip faces randomly", True, help="flip src faces left/right")
    bitrate: int = option("Bitrate", 16, min=1, max=100, ask=lambda v: not v["random_flip"])


def answers(*texts: str):
    """An input() stand-in that records prompts and returns the given answers."""
    queue = list(texts)
    prompts: list[str] = []

    def fake_input(prompt: str) -> str:
        prompts.append(prompt)
        if not queue:
            raise EOFError
        return queue.pop(0)

    fake_input.prompts = prompts  # type: ignore[attr-defined]
    return fake_input


def test_prompt_line_looks_like_dfl():
    specs = {s.key: s for s in option_specs(Demo)}
    assert specs["resolution"].prompt_line(128) == "[128] Resolution ( 64-640 ?:help ) : "
    assert specs["face_type"].prompt_line("wf") == "[wf] Face type ( h/mf/f/wf/head ?:help ) : "
    assert specs["random_flip"].prompt_line(True) == "[y] Flip faces randomly ( y/n ?:help ) : "
    assert specs["autosave_minutes"].prompt_line(25.0) == "[25] Autosave every N minutes ( 0.5-600 ?:help ) : "


def test_enter_takes_default_and_question_mark_prints_help():
    spec = option_specs(Demo)[0]
    out = io.StringIO()
    fake = answers("?", "")
    assert ask_option(spec, 256, input_fn=fake, out=out) == 256
    assert "face size in pixels" in out.getvalue()
    assert len(fake.prompts) == 2


def test_out_of_range_and_non_numeric_answers_are_asked_again():
    spec = option_specs(Demo)[0]
    out = io.StringIO()
    assert ask_option(spec, 128, input_fn=answers("abc", "9999", "192"), out=out) == 192
    lines = out.getvalue().splitlines()
    assert lines[0] == "'abc' is not a whole number (expected 64-640), try again"
    assert lines[1] == "9999 is out of range (expected 64-640), try again"


def test_three_bad_answers_or_end_of_input_stop_with_user_error():
    spec = option_specs(Demo)[0]
    with pytest.raises(UserError, match="gave up after 3 invalid answers"):
        ask_option(spec, 128, input_fn=answers("a", "b", "c", "128"), out=io.StringIO())
    with pytest.raises(UserError, match="input ended"):
        ask_option(spec, 128, input_fn=answers(), out=io.StringIO())


def test_resolution_order_defaults_saved_flags_prompt():
    saved = {"resolution": 256, "autosave_minutes": 10.0, "random_flip": False}
    # saved beats default; a flag beats saved; the prompt's default is the saved value
    fake = answers("", "", "", "")
    opts = resolve_options(Demo, given={"autosave_minutes": 5.0}, saved=saved, interactive=True, input_fn=fake)
    assert (opts.resolution, opts.autosave_minutes, opts.random_flip, opts.bitrate) == (256, 5.0, False, 16)
    assert fake.prompts[0].startswith("[256] Resolution")
    # flags are not asked; bitrate is asked because random_flip is off (a conditional prompt)
    assert [p.split("]")[1].split("(")[0].strip() for p in fake.prompts] == [
        "Resolution", "Face type", "Flip faces randomly", "Bitrate",
    ]  # fmt: skip


def test_non_interactive_never_reads_input():
    def no_input(prompt: str) -> str:
        raise AssertionError("prompted in a headless run")

    opts = resolve_options(Demo, saved={"face_type": "f"}, interactive=False, input_fn=no_input)
    assert opts == Demo(face_type="f")


def test_fixed_options_keep_saved_value_on_resume():
    saved = {"resolution": 256}
    fake = answers("", "", "")
    opts = resolve_options(Demo, saved=saved, interactive=True, resuming=True, input_fn=fake)
    assert opts.resolution == 256
    assert not any("Resolution" in p for p in fake.prompts)
    with pytest.raises(UserError, match="fixed when a model is created"):
        resolve_options(Demo, given={"resolution": 128}, saved=saved, resuming=True)


def test_invalid_saved_values_fall_back_to_defaults():
    opts = resolve_options(Demo, saved={"resolution": 10_000, "face_type": "nope", "unknown": 1})
    assert opts.resolution == 128 and opts.face_type == "wf"


def test_flags_are_generated_from_specs_and_validate():
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_option_flags(parser, Demo)
    ns = parser.parse_args(["--resolution", "192", "--no-random-flip", "--autosave-minutes", "0.5"])
    assert given_from_namespace(Demo, ns) == {"resolution": 192, "random_flip": False, "autosave_minutes": 0.5}
    with pytest.raises(argparse.ArgumentError, match="out of range"):
        parser.parse_args(["--resolution", "32"])
    with pytest.raises(argparse.ArgumentError, match="not one of"):
        parser.parse_args(["--face-type", "x"])


def test_json_round_trip():
    opts = Demo(resolution=320, face_type="head", autosave_minutes=0.5, random_flip=False, bitrate=3)
    data = json.loads(json.dumps(options_to_dict(opts)))
    assert options_from_dict(Demo, data) == opts


def test_wait_for_enter_returns_at_once_without_terminal():
    started = time.monotonic()
    assert wait_for_enter(5, "Press Enter", stream=io.StringIO("\n"), out=io.StringIO()) is False
    assert time.monotonic() - started < 1


@pytest.mark.skipif(os.name == "nt", reason="select() on pipes is POSIX")
def test_wait_for_enter_sees_enter_and_times_out():
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd) as reader, os.fdopen(write_fd, "w") as writer:
        out = io.StringIO()
        started = time.monotonic()
        assert wait_for_enter(0.3, "Press Enter within 0.3 s", stream=reader, out=out, require_tty=False) is False
        assert 0.25 < time.monotonic() - started < 2
        assert "Press Enter" in out.getvalue()
        writer.write("\n")
        writer.flush()
        assert wait_for_enter(5, "again", stream=reader, out=out, require_tty=False) is True


def test_boolean_options_must_be_named_positively():
    @dataclass(frozen=True)
    class Bad:
        no_preview: bool = option("No preview", False)

    with pytest.raises(TypeError, match="name boolean options positively"):
        option_specs(Bad)


def test_an_auto_option_takes_the_word_auto_as_zero_and_shows_it():
    from facelab.options import OptionSpec

    spec = OptionSpec(key="batch_size", title="Batch size", kind=int, default=0, min=1, max=512, auto=True)
    assert spec.parse("auto") == 0 and spec.parse(" AUTO ") == 0 and spec.parse("6") == 6
    assert spec.prompt_line(0) == "[auto] Batch size ( auto or 1-512 ?:help ) : " and spec.prompt_line(6).startswith("[6]")
    assert spec.check(0) == 0  # auto, not out of range
    with pytest.raises(ValueError, match="out of range"):
        spec.parse("600")
    plain = OptionSpec(key="n", title="N", kind=int, default=1, min=1, max=9)
    with pytest.raises(ValueError):
        plain.parse("auto")
    with pytest.raises(ValueError, match="out of range"):
        plain.check(0)
