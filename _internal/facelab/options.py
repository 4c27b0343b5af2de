"""Option specs: one declaration drives the CLI flag, the console prompt and the saved JSON.

A stage declares its options as a frozen dataclass whose fields are made with `option(...)`:

    @dataclass(frozen=True)
    class ExtractVideoOptions:
        fps: float = option("FPS", 0.0, min=0, max=240, help="0 = the video's own frame rate")

From that one spec come:
- the flag `--fps` (name with dashes; bools get `--x` / `--no-x`);
- the prompt, in DeepFaceLab's look (dfl-spec §1): `[0] FPS ( 0-240 ?:help ) : `, where `?`
  prints the help, Enter takes the default and a bad answer is asked again;
- the JSON written next to a model (`options_to_dict` / `options_from_dict`).

Resolution order (`resolve_options`): defaults -> saved -> flags -> prompt. Prompts happen only
when the caller says the session is interactive (a terminal and no `--non-interactive`); a
headless run never blocks and takes the saved value or the default.

`wait_for_enter` is the timed "press Enter within N s to override" helper the trainer uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Mapping

from facelab.errors import UserError

_TRUE = ("y", "yes", "1", "true", "on")
_FALSE = ("n", "no", "0", "false", "off")
MAX_BAD_ANSWERS = 3


@dataclass(frozen=True)
class OptionSpec:
    """One option.

    Attributes:
        key: field name, JSON key, and (with dashes) the flag name.
        title: the name shown in the prompt (DFL's wording).
        kind: int, float, bool or str.
        default: value when nothing else says otherwise.
        help: what `?` prints and `--help` shows.
        min, max: inclusive range for numbers.
        choices: allowed values for strings.
        ask: prompt for it on a terminal; a callable gets the values resolved so far (fields
            declared earlier) and decides, e.g. "ask the bitrate only when not lossless".
        fixed: model options only: chosen when the model is created, never changed on resume.
        positional: also accepted as a bare argument (a file dropped on a .bat).
        auto: int options only: the word `auto` is accepted and stands for 0 ("choose for me"),
            and 0 shows as `auto` in prompts.
    """

    key: str
    title: str
    kind: type
    default: Any
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    ask: bool | Callable[[Mapping[str, Any]], bool] = True
    fixed: bool = False
    positional: bool = False
    auto: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    def hint(self) -> str:
        """The range part of the prompt: `0-240`, `png/jpg`, `y/n`, or empty."""
        if self.kind is bool:
            return "y/n"
        if self.choices:
            return "/".join(self.choices)
        if self.auto:
            return f"auto or {format_value(self.kind(self.min or 1))}-{format_value(self.kind(self.max))}"
        if self.min is not None and self.max is not None:
            return f"{format_value(self.kind(self.min))}-{format_value(self.kind(self.max))}"
        if self.min is not None:
            return f">= {format_value(self.kind(self.min))}"
        return ""

    def prompt_line(self, default: Any) -> str:
        hint = self.hint()
        middle = f"{hint} ?:help" if hint else "?:help"
        shown = "auto" if self.auto and default == 0 else format_value(default)
        return f"[{shown}] {self.title} ( {middle} ) : "

    def parse(self, text: str) -> Any:
        """Turn typed text into a checked value; ValueError says what was expected."""
        raw = text.strip()
        if self.kind is bool:
            low = raw.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"'{raw}' is not y or n")
        if self.kind is int and self.auto and raw.lower() == "auto":
            return 0
        if self.kind is int:
            try:
                value: Any = int(raw)
            except ValueError:
                raise ValueError(f"'{raw}' is not a whole number{self._range_tail()}") from None
        elif self.kind is float:
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"'{raw}' is not a number{self._range_tail()}") from None
            if not math.isfinite(value):
                raise ValueError(f"'{raw}' is not a finite number{self._range_tail()}")
        else:
            value = raw
        return self.check(value)

    def check(self, value: Any) -> Any:
        """Validate a value of the right kind (from a flag, a prompt or saved JSON)."""
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{self.title}: expected y or n, got {value!r}")
            return value
        if self.kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{self.title}: expected a number, got {value!r}")
            if self.kind is int and float(value) != int(value):
                raise ValueError(f"{self.title}: expected a whole number, got {value!r}")
            value = self.kind(value)
            if self.auto and value == 0:
                return value
            if (self.min is not None and value < self.min) or (
                self.max is not None and value > self.max
            ):
                raise ValueError(f"{format_value(value)} is out of range{self._range_tail()}")
            return value
        if not isinstance(value, str):
            raise ValueError(f"{self.title}: expected text, got {value!r}")
        if self.choices and value not in self.choices:
            raise ValueError(f"'{value}' is not one of {', '.join(self.choices)}")
        return value

    def wants_prompt(self, resolved: Mapping[str, Any]) -> bool:
        return self.ask(resolved) if callable(self.ask) else bool(self.ask)

    def _range_tail(self) -> str:
        hint = self.hint()
        return f" (expected {hint})" if hint and self.kind is not bool else ""


def format_value(value: Any) -> str:
    """How a value shows in prompts: bools as y/n, integral floats without noise."""
    if isinstance(value, bool):
        return "y" if value else "n"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return str(value)


def option(
    title: str,
    default: Any,
    *,
    help: str = "",  # noqa: A002 - the word users see
    min: float | None = None,  # noqa: A002
    max: float | None = None,  # noqa: A002
    choices: tuple[str, ...] | None = None,
    ask: bool | Callable[[Mapping[str, Any]], bool] = True,
    fixed: bool = False,
    positional: bool = False,
    kind: type | None = None,
    auto: bool = False,
) -> Any:
    """Declare a dataclass field as an option (see the module docstring)."""
    spec_kwargs = dict(
        title=title,
        kind=kind or type(default),
        default=default,
        help=help,
        min=min,
        max=max,
        choices=choices,
        ask=ask,
        fixed=fixed,
        positional=positional,
        auto=auto,
    )
    if spec_kwargs["kind"] not in (int, float, bool, str):
        raise TypeError(f"option {title!r}: unsupported type {spec_kwargs['kind']}")
    return field(default=default, metadata={"option": spec_kwargs})


def option_specs(cls: type) -> list[OptionSpec]:
    """The specs of an options dataclass, in declaration order."""
    specs = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("option")
        if meta is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with option(...)")
        spec = OptionSpec(key=f.name, **meta)
        if spec.kind is bool and spec.key.startswith("no_"):
            # argparse would turn --no-x into "x = False" whatever the option means: name it x
            raise TypeError(f"{cls.__name__}.{f.name}: name boolean options positively (--x / --no-x)")
        spec.check(spec.default)  # a bad default is a programming error; fail at import/test time
        specs.append(spec)
    return specs


# ---------------------------------------------------------------- flags


def add_option_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per option; values not given stay None so that saved values survive."""
    for spec in option_specs(cls):
        default = "auto" if spec.auto and spec.default == 0 else format_value(spec.default)
        help_text = f"{spec.help} [default: {default}" + (
            f"; {spec.hint()}]" if spec.hint() else "]"
        )
        if spec.kind is bool:
            parser.add_argument(
                spec.flag, dest=spec.key, action=argparse.BooleanOptionalAction, default=None,
                help=help_text,
            )  # fmt: skip
            continue
        parser.add_argument(
            spec.flag, dest=spec.key, type=_flag_parser(spec), default=None, metavar=spec.key.upper(),
            help=help_text,
        )  # fmt: skip
        if spec.positional:
            parser.add_argument(
                f"_{spec.key}_positional", nargs="?", type=_flag_parser(spec), default=None,
                metavar=spec.key.upper(), help=f"same as {spec.flag}",
            )  # fmt: skip


def _flag_parser(spec: OptionSpec) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return spec.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = spec.key  # argparse names the type in its messages
    return parse


def given_from_namespace(cls: type, namespace: argparse.Namespace) -> dict[str, Any]:
    """The option values the user actually typed as flags (or as a positional argument)."""
    given: dict[str, Any] = {}
    values = vars(namespace)
    for spec in option_specs(cls):
        value = values.get(spec.key)
        if value is None and spec.positional:
            value = values.get(f"_{spec.key}_positional")
        if value is not None:
            given[spec.key] = value
    return given


# ---------------------------------------------------------------- prompts


def say(text: str, out=None) -> None:  # noqa: ANN001
    """Text shown with the prompts (a list to choose from), where the prompts are written."""
    (out or sys.stdout).write(text + "\n")


def ask_option(
    spec: OptionSpec,
    default: Any,
    *,
    input_fn: Callable[[str], str] = input,
    out: IO[str] | None = None,
) -> Any:
    """Ask one option in DFL's style until the answer is valid.

    Enter takes `default`; `?` prints the help; a bad answer prints one line saying what was
    expected and asks again. After `MAX_BAD_ANSWERS` bad answers in a row, or when input ends,
    a UserError stops the run (non-zero exit) instead of looping forever.
    """
    out = out or sys.stdout
    bad = 0
    while True:
        try:
            raw = input_fn(spec.prompt_line(default))
        except EOFError:
            raise UserError(f"no answer for '{spec.title}': input ended") from None
        raw = raw.strip()
        if raw == "":
            return default
        if raw == "?":
            out.write((spec.help or "No help for this option.") + "\n")
            continue
        try:
            return spec.parse(raw)
        except ValueError as exc:
            bad += 1
            if bad >= MAX_BAD_ANSWERS:
                raise UserError(f"{spec.title}: {exc}; gave up after {bad} invalid answers") from None
            out.write(f"{exc}, try again\n")


def ask_yes_no(
    question: str,
    default: bool,
    *,
    input_fn: Callable[[str], str] = input,
    out: IO[str] | None = None,
) -> bool:
    """A y/n question in the same style as the option prompts."""
    spec = OptionSpec(key="answer", title=question, kind=bool, default=default)
    return ask_option(spec, default, input_fn=input_fn, out=out)


def resolve_options(
    cls: type,
    given: Mapping[str, Any] | None = None,
    saved: Mapping[str, Any] | None = None,
    *,
    interactive: bool = False,
    resuming: bool = False,
    input_fn: Callable[[str], str] = input,
    out: IO[str] | None = None,
) -> Any:
    """Build the options dataclass: defaults -> saved -> flags -> prompt.

    Args:
        cls: an options dataclass made with `option(...)` fields.
        given: values typed as flags (only the ones the user gave).
        saved: values loaded from JSON (e.g. a model's state); unknown keys are ignored,
            invalid ones fall back to the default.
        interactive: prompt for options not given as flags (their default shown is the saved
            value, if any). False never reads input.
        resuming: `fixed` options keep their saved value, are not asked, and a flag that tries
            to change one is a UserError.
    """
    given = dict(given or {})
    saved = dict(saved or {})
    values: dict[str, Any] = {}
    for spec in option_specs(cls):
        value = spec.default
        if spec.key in saved:
            try:
                value = spec.check(saved[spec.key])
            except ValueError:
                pass  # an edited or older JSON: keep the default rather than fail
        locked = resuming and spec.fixed and spec.key in saved
        if spec.key in given:
            if locked and given[spec.key] != value:
                raise UserError(
                    f"{spec.title} is fixed when a model is created (this one has "
                    f"{format_value(value)}): drop {spec.flag} or start a new model"
                )
            value = spec.check(given[spec.key])
        elif interactive and not locked and spec.wants_prompt(values):
            value = ask_option(spec, value, input_fn=input_fn, out=out)
        values[spec.key] = value
    return cls(**values)


def options_to_dict(options: Any) -> dict[str, Any]:
    """Plain JSON-ready dict of an options dataclass."""
    return {spec.key: getattr(options, spec.key) for spec in option_specs(type(options))}


def options_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild options from saved JSON (same rules as `resolve_options` with saved only)."""
    return resolve_options(cls, saved=data)


# ---------------------------------------------------------------- timed override


def wait_for_enter(
    seconds: float,
    message: str,
    *,
    stream: IO[str] | None = None,
    out: IO[str] | None = None,
    require_tty: bool = True,
) -> bool:
    """Print `message` and wait up to `seconds` for Enter; True if it was pressed.

    Used on resume: "Press Enter within 2 seconds to override model settings." Returns False at
    once when the stream is not a terminal (headless runs never wait).
    """
    stream = stream or sys.stdin
    out = out or sys.stdout
    if require_tty and not _isatty(stream):
        return False
    out.write(message + "\n")
    out.flush()
    deadline = time.monotonic() + seconds
    if sys.platform == "win32" and stream is sys.stdin:  # pragma: no cover - Windows console
        import msvcrt

        while time.monotonic() < deadline:
            if msvcrt.kbhit() and msvcrt.getwch() in ("\r", "\n"):
                return True
            time.sleep(0.02)
        return False
    import select

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([stream], [], [], remaining)
        if ready:
            line = stream.readline()
            return line != ""  # "" is end of input, not Enter


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
