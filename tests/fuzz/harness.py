"""What every reader's fuzz test shares: the contract, the limits an example runs under, and the mutations.

The contract of a reader (a function of one file, or of a folder holding it): a valid file loads and
`accept` finds the result whole (typed, usable); anything else raises one of `ALLOWED` (FileNotFoundError,
or ValueError: CheckpointError, ConversionError and ImageLoadError subclass it) whose message is one
line naming the file; never another exception, a hang (`EXAMPLE_SECONDS`, and hypothesis' deadline for
slow examples) or a memory blow-up (the address space is limited to `MEMORY_BUDGET` above what the process
had: an allocation past it fails, and its MemoryError or RuntimeError is not ours, so the test fails).

The inputs start from valid seeds each test writes, mutated: bytes (`byte_mutations`: flips, interesting
bytes, truncations, insertions, deletions, duplications, biased toward the headers), JSON values
(`json_mutations`: wrong types, negative and huge numbers, NaN, missing and unknown keys, deep nesting,
unicode), and the tokens of text formats (`token_mutations`: CSV, token files, sentences, XML).

`CAPTIONLENS_FUZZ_EXAMPLES` sets the examples per test (default `SMOKE_EXAMPLES`, derandomized, for
`make test`); when it is set, each run draws new examples (`make fuzz`).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import resource
import signal
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SMOKE_EXAMPLES = 30
EXAMPLES = int(os.environ.get("CAPTIONLENS_FUZZ_EXAMPLES", SMOKE_EXAMPLES))
DEADLINE_MS = int(os.environ.get("CAPTIONLENS_FUZZ_DEADLINE_MS", 10_000))
EXAMPLE_SECONDS = 60                  # an example still running then is a hang
MEMORY_BUDGET = 3 << 30               # bytes of address space an example may add
ALLOWED = (FileNotFoundError, ValueError)

T = TypeVar("T")


class Seeds(dict):
    """Seed files by name, shown short in hypothesis' report of a failing example (the example shows its bytes)."""

    def __repr__(self) -> str:
        return f"<seeds {', '.join(self)}>"


def fuzz_settings(examples: int = EXAMPLES) -> settings:
    """Hypothesis settings of a reader's fuzz test: `examples` examples, no example database (nothing written
    in the tree), derandomized for the smoke run of `make test`, fresh examples when the count is set."""
    return settings(max_examples=examples, deadline=DEADLINE_MS, database=None,
                    derandomize="CAPTIONLENS_FUZZ_EXAMPLES" not in os.environ, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])


class ContractBroken(AssertionError):
    """The harness's verdict that a reader broke the contract (not an AssertionError the reader raised)."""


class ExampleTimeout(Exception):
    """An example ran past `EXAMPLE_SECONDS`: a hang."""


@contextlib.contextmanager
def limits(seconds: float = EXAMPLE_SECONDS, memory: int = MEMORY_BUDGET) -> Iterator[None]:
    """Run the block with at most `memory` more bytes of address space and `seconds` of wall time."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = _address_space() + memory
    resource.setrlimit(resource.RLIMIT_AS, (ceiling if hard == resource.RLIM_INFINITY else min(ceiling, hard), hard))

    def timeout(*_: Any) -> None:
        raise ExampleTimeout(f"the reader ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _address_space() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


# (test, outcome) -> inputs: "loaded", "refused" (our one-line error), "broke the contract", or what a test
# records itself (`record`); conftest.py writes the table when CAPTIONLENS_FUZZ_STATS names a file.
STATS: Counter[tuple[str, str]] = Counter()


def record(outcome: str) -> None:
    """Count one input of the running test under `outcome`."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    STATS[(test.split("[")[0], outcome)] += 1


def check_reader(read: Callable[[], T], names: Collection[str], accept: Callable[[T], None] | None = None,
                 files: Collection[Path] = ()) -> T | None:
    """Run `read()` under `limits` and hold it to the contract: the result, which `accept` checks is whole,
    or None after one of `ALLOWED` whose message is one line naming one of `names` (the file's name).
    A broken contract is raised, after `files` are copied to the folder CAPTIONLENS_FUZZ_DUMP names, when it
    names one."""
    try:
        with limits(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            refused, result = _read(read, names)
            if not refused and accept is not None:
                accept(result)
    except MemoryError as exc:
        failure: BaseException = ContractBroken(f"memory blow-up: {type(exc).__name__}: {exc}")
        failure.__cause__ = exc
    except ExampleTimeout as exc:
        failure = ContractBroken(f"hang: {exc}")
        failure.__cause__ = exc
    except BaseException as exc:
        failure = exc
    else:
        record("refused" if refused else "loaded")
        return result
    record("broke the contract")
    _dump(files)
    raise failure


def check_refused(read: Callable[[], Any], names: Collection[str]) -> None:
    """`check_reader` for an input known to be bad (a crash found): it must be refused with our error."""
    result = check_reader(read, names, lambda loaded: _refuse(loaded))
    assert result is None


def _refuse(loaded: Any) -> None:
    raise ContractBroken(f"a bad file loaded: {loaded!r:.200}")


def _read(read: Callable[[], T], names: Collection[str]) -> tuple[bool, T | None]:
    """(False, the result), or (True, None) after our error; ContractBroken for an error that is not ours."""
    try:
        return False, read()
    except ALLOWED as exc:
        message = str(exc)
        if not message.strip() or "\n" in message or "\r" in message:
            raise ContractBroken(f"{type(exc).__name__}'s message is not one line: {message!r}") from exc
        if not any(name in message for name in names):
            raise ContractBroken(f"{type(exc).__name__} names none of {sorted(names)}: {message!r}") from exc
        return True, None


def _dump(files: Collection[Path]) -> None:
    folder = os.environ.get("CAPTIONLENS_FUZZ_DUMP")
    if not folder:
        return
    for path in files:
        data = path.read_bytes()
        target = Path(folder) / f"{hashlib.sha1(data).hexdigest()[:12]}-{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


# --- bytes ------------------------------------------------------------------------------------------------

class Blob(bytes):
    """A drawn file's bytes, shown in a failing example's report by their length, start and end."""

    def __repr__(self) -> str:
        if len(self) <= 400:
            return bytes.__repr__(self)
        return f"Blob({bytes(self[:300])!r} ... {bytes(self[-60:])!r}, {len(self)} bytes)"


INTERESTING_BYTES = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\x01", b"\n", b"\r", b'"', b"'", b"\\", b"{", b"}",
                     b"[", b"]", b",", b":", b"<", b">", b"/", b"#", b"\t", b" ", b"-1", b"0", b"99999999999999",
                     b"1e999", b"NaN", b"\xc3\xa9", b"\xf0\x9d\x9f\x98", b"\xed\xa0\x80", b"\xef\xbb\xbf",
                     b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff\xff\xff\xff\x7f")


@st.composite
def positions(draw: Any, size: int, head: int = 512) -> int:
    """A position in `size` bytes, half the time in the first `head` (headers, magic numbers, lengths)."""
    if size <= 0:
        return 0
    return draw(st.one_of(st.integers(0, min(size, head) - 1), st.integers(0, size - 1)))


@st.composite
def byte_mutations(draw: Any, seed: bytes, max_ops: int = 4, head: int = 512) -> bytes:
    """`seed` after 1..`max_ops` byte-level edits, half of them in its first `head` bytes."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(("flip", "set", "truncate", "insert", "delete", "duplicate", "random")))
        at = draw(positions(len(data), head))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            value = draw(st.sampled_from(INTERESTING_BYTES))
            data[at:at + len(value)] = value
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.one_of(st.sampled_from(INTERESTING_BYTES), st.binary(min_size=1, max_size=16)))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif op == "duplicate":
            data[at:at] = data[at:at + draw(st.integers(1, 256))]
        elif op == "random" and data:
            value = draw(st.binary(min_size=1, max_size=8))
            data[at:at + len(value)] = value
    return Blob(data)


# --- JSON -------------------------------------------------------------------------------------------------

DEEP = "\x00deep"   # a placeholder value: replaced in the text by arrays nested far deeper than any file's
DEEP_TEXT = "[" * 100_000 + "]" * 100_000
NUMBERS = (0, -1, 1, 2**31, -(2**31), 2**63, 2**64 + 1, 10**30, 10**400, 1.5, -0.0, 1e308, 1e-320,
           float("nan"), float("inf"), float("-inf"))
STRINGS = ("", " ", "x", "é", "\u202e", "\U0001d7d8", "\ud800", "\x00", "a\nb", "../../etc/passwd", "/", "NaN",
           "1", "-1", "true", "null", "<PAD>", "<START>", "x" * 10_000)


def wrong_values() -> st.SearchStrategy[Any]:
    """Values of every JSON kind that a field may wrongly hold."""
    return st.one_of(
        st.sampled_from(NUMBERS), st.sampled_from(STRINGS), st.none(), st.booleans(), st.integers(),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.just(DEEP),
        st.lists(st.one_of(st.integers(-3, 3), st.text(max_size=3), st.none()), max_size=4),
        st.dictionaries(st.text(max_size=6), st.one_of(st.integers(-3, 3), st.text(max_size=3)), max_size=3),
        st.just([[[[[]]]]]), st.just({"": {"": {"": {}}}}))


def json_paths(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every path (keys and indices) from the root to a value of a JSON document, the root's () included."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, (*path, index))


def _container(root: Any, path: tuple) -> Any:
    for key in path[:-1]:
        root = root[key]
    return root


def _similar(value: Any) -> st.SearchStrategy[Any]:
    """Wrong values close to `value`: another number for a number, another string for a string."""
    if isinstance(value, bool):
        return st.sampled_from((not value, 0, 1, "true", None))
    if isinstance(value, (int, float)):
        return st.sampled_from(NUMBERS).map(lambda n: n if not isinstance(value, int) or isinstance(n, float)
                                            else n * (1 if value >= 0 else -1))
    if isinstance(value, str):
        return st.one_of(st.sampled_from(STRINGS), st.text(max_size=12), st.just(value.upper()), st.just(value + "x"))
    if isinstance(value, list):
        return st.sampled_from(([], value[:1] * 3, value[::-1], value * 50 if len(value) < 64 else value, [value]))
    return st.sampled_from(({}, {"": value}, [value]))


@st.composite
def json_edits(draw: Any, seed: Any, max_ops: int = 3) -> Any:
    """A deep copy of the JSON value `seed` with 1..`max_ops` structural edits: a value replaced (by a wrong
    or a similar one), a key deleted or added, an item deleted or duplicated, a value wrapped in a list."""
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, max_ops))):
        path = draw(st.sampled_from(list(json_paths(doc))))
        op = draw(st.sampled_from(("replace", "similar", "delete", "add", "duplicate", "wrap")))
        target = _get(doc, path)
        if op == "add" and isinstance(target, dict):
            key = draw(st.one_of(st.text(max_size=8), st.sampled_from(sorted(map(str, target)) or [""])))
            target[key + draw(st.sampled_from(("", "_", "x")))] = draw(wrong_values())
            continue
        if not path:
            if op in ("replace", "similar"):
                doc = draw(wrong_values() if op == "replace" else _similar(doc))
            continue
        parent, key = _container(doc, path), path[-1]
        if op == "replace":
            parent[key] = draw(wrong_values())
        elif op == "similar":
            parent[key] = draw(_similar(target))
        elif op == "delete":
            del parent[key]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(target))
        elif op == "wrap":
            parent[key] = [target]
    return doc


def _get(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def dump_json(value: Any) -> bytes:
    """JSON text of `value` (NaN and infinities as Python writes them), with `DEEP` placeholders expanded."""
    text = json.dumps(value, allow_nan=True)
    return Blob(text.replace(json.dumps(DEEP), DEEP_TEXT).encode("utf-8", "surrogatepass"))


def json_mutations(seed: Any) -> st.SearchStrategy[bytes]:
    """JSON text of `seed` after structural edits (`json_edits`), or of `seed` after byte edits, or both."""
    text = dump_json(seed)
    edited = json_edits(seed).map(dump_json)
    return st.one_of(edited, byte_mutations(text), edited.flatmap(byte_mutations))


# --- text -------------------------------------------------------------------------------------------------

TOKENS = ("", " ", "\t", "\n", "\r\n", ",", '"', "#", "[", "]", "/", "<", ">", "</", "/>", "=", "&", "&amp;",
          "&#0;", "&undefined;", "0", "-1", "1", "00", "99999999999999999999", "1" * 5000, "1.5", "NaN", "x", "é",
          "\u00b2", "\u0663", "\U0001d7d8", "\x00", "\ufeff", "]]>", "<!--", "-->", "<?xml", "EN#", "/EN#0",
          "/EN#1/people", "notvisual", ".jpg", ".jpg.1", "#0", "image,caption")
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")


@st.composite
def token_mutations(draw: Any, seed: str, extra: tuple[str, ...] = (), max_ops: int = 4) -> bytes:
    """`seed` (a text format: CSV, token lines, sentences, XML) with 1..`max_ops` of its tokens (words,
    runs of white space, punctuation) replaced, deleted or duplicated, or interesting tokens inserted; or
    whole lines deleted, duplicated or swapped. Encoded as UTF-8 (lone surrogates kept as bytes)."""
    tokens = _TOKEN.findall(seed)
    choices = TOKENS + extra
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(("replace", "delete", "insert", "duplicate", "lines")))
        at = draw(st.integers(0, max(len(tokens) - 1, 0)))
        if op == "replace" and tokens:
            tokens[at] = draw(st.one_of(st.sampled_from(choices), st.text(max_size=6)))
        elif op == "delete" and tokens:
            del tokens[at]
        elif op == "insert":
            tokens.insert(at, draw(st.sampled_from(choices)))
        elif op == "duplicate" and tokens:
            tokens[at:at] = tokens[at:at + draw(st.integers(1, 40))]
        elif op == "lines":
            lines = "".join(tokens).split("\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            edit = draw(st.sampled_from(("delete", "duplicate", "swap")))
            if edit == "delete":
                del lines[i]
            elif edit == "duplicate":
                lines.insert(i, lines[j])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            tokens = _TOKEN.findall("\n".join(lines))
    return Blob("".join(tokens).encode("utf-8", "surrogatepass"))


def text_mutations(seed: str, extra: tuple[str, ...] = ()) -> st.SearchStrategy[bytes]:
    """A text file's mutations: token edits, byte edits, or both."""
    tokens = token_mutations(seed, extra)
    return st.one_of(tokens, byte_mutations(seed.encode("utf-8")), tokens.flatmap(byte_mutations))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- results ----------------------------------------------------------------------------------------------

def assert_typed(value: Any, where: str = "result") -> None:
    """Every field of every dataclass in `value` (itself, or inside its lists, tuples and mappings) holds a
    value of its annotated type: what a reader hands out is whole, not a JSON value passed through."""
    import dataclasses
    import typing

    from typeguard import CollectionCheckStrategy, TypeCheckError, check_type

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        module = __import__(type(value).__module__, fromlist=["_"])
        hints = typing.get_type_hints(type(value), localns={**vars(module), "CaptionExplanation": Any})
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            try:
                check_type(item, hints[field.name], collection_check_strategy=CollectionCheckStrategy.ALL_ITEMS)
            except TypeCheckError as exc:
                raise AssertionError(f"{where}.{field.name} = {item!r:.80} is not a {hints[field.name]}: {exc}"
                                     ) from None
            assert_typed(item, f"{where}.{field.name}")
    elif isinstance(value, dict):
        for key, item in value.items():
            assert_typed(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            assert_typed(item, f"{where}[{index}]")
