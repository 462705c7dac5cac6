"""Reading pickles that hold objects (the tutorials' vocab.pkl and whole pickled modules) without running
any code: a restricted unpickler that resolves only the globals a format names, each to an inert
stand-in or a tensor rebuild, and refuses every other global, naming it.

Python's pickle can call any global it names; what makes unpickling dangerous is which globals it may
reach. `RestrictedUnpickler.find_class` is the only way a pickle reaches one, so a file that names
`os.system` (or anything not listed) stops with `UnsafePickle` before anything is called. Stand-ins
(`Pickled`) take the pickled state as a plain `__dict__` and have no methods that run on unpickling.
torch files go through `torch.load` with this module as its `pickle_module`: torch then reads the zip
or legacy container and tensors' storages, and every global inside goes through our `find_class`.
"""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any, cast

import torch


class UnsafePickle(pickle.UnpicklingError):
    """A pickle names a global that its format does not need; the message names it."""


class BrokenPickle(pickle.UnpicklingError):
    """A pickle or torch file that cannot be decoded (truncated, corrupted, lengths past its end); the
    message is one line."""


# What decoding a corrupted pickle or torch container raises, from pickle, zipfile and torch's own loaders.
DECODE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError,
                 AssertionError, OverflowError, RuntimeError, OSError, zipfile.BadZipFile)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class Pickled:
    """Inert stand-in for a pickled object of a class we do not import: its state lands in `__dict__`.
    `pickled_name` is the class it stood for (`models.Encoder`, `torch.nn.modules.conv.Conv2d`)."""

    pickled_name = "?"

    def __repr__(self) -> str:
        return f"<pickled {self.pickled_name}>"


def stand_in(name: str) -> type[Pickled]:
    """A fresh `Pickled` subclass standing for the class `module.Name`."""
    return type(name.rsplit(".", 1)[-1], (Pickled,), {"pickled_name": name})


def _empty_dict(*_: Any) -> dict:
    """`collections.defaultdict(factory)` read as a plain dict: the factory is never needed after loading."""
    return {}


# Globals every torch container of tensors needs (tensor and parameter rebuilds, ordered dicts);
# torch resolves storage types itself before asking the unpickler.
TENSOR_GLOBALS: dict[str, Any] = {
    "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
    "collections.OrderedDict": OrderedDict,
    "collections.defaultdict": _empty_dict,
    "builtins.set": set, "__builtin__.set": set,
    "builtins.dict": dict, "__builtin__.dict": dict,
}


# What torch's legacy loader warns for every stand-in in place of a pickled module class.
SOURCE_CHECK_WARNING = "Couldn't retrieve source code for container of type "


class RestrictedUnpickler(pickle.Unpickler):
    """A pickle.Unpickler that resolves exactly the globals in `allowed` ("module.name" -> object)."""

    allowed: Mapping[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full not in self.allowed:
            raise UnsafePickle(f"refused to unpickle the global {full!r} (not part of this format)")
        return self.allowed[full]

    def __init__(self, file: Any, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._file = file

    def load(self) -> Any:
        """Check the next pickle's lengths and memo indices against the file before unpickling it: the C
        unpickler allocates what a FRAME or BINBYTES8 declares before reading it, and a memo as long as the
        largest index, so one corrupted number would allocate gigabytes."""
        file = self._file
        start = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(start)
        try:
            for opcode, arg, _ in pickletools.genops(cast(IO[bytes], _Clamped(file, end))):  # reads and readlines only
                if opcode.name == "FRAME" and arg > end - file.tell():
                    raise BrokenPickle(f"a frame of {arg} bytes, past the end of the file")
                if opcode.name in _PUT_OPS and isinstance(arg, int) and arg > end:
                    raise BrokenPickle(f"a memo index {arg} larger than the file")
        except (ValueError, EOFError, OverflowError) as exc:
            raise BrokenPickle(_one_line(exc)) from None
        finally:
            file.seek(start)
        return super().load()


class _Clamped:
    """A file whose reads stop at `end`, so that scanning a corrupted length reads no more than the file."""

    def __init__(self, file: Any, end: int) -> None:
        self.file, self.end = file, end

    def read(self, n: int = -1) -> bytes:
        left = max(self.end - self.file.tell(), 0)
        return self.file.read(left if n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self.file.readline()


def restricted_pickle_module(allowed: Mapping[str, Any]) -> SimpleNamespace:
    """A stand-in for the `pickle` module (as `torch.load(pickle_module=...)` takes one) whose
    unpicklers resolve only `allowed`."""
    unpickler = type("Unpickler", (RestrictedUnpickler,), {"allowed": dict(allowed)})

    def load(file: Any, **kwargs: Any) -> Any:
        return unpickler(file, **kwargs).load()

    return SimpleNamespace(Unpickler=unpickler, load=load, UnpicklingError=pickle.UnpicklingError,
                           __name__="captionlens_restricted_pickle")


def load_pickle(path: Path, allowed: Mapping[str, Any]) -> Any:
    """Unpickle a plain pickle file with only `allowed` globals; a corrupted file raises `BrokenPickle`."""
    try:
        with open(path, "rb") as fh:
            return restricted_pickle_module(allowed).load(fh)
    except (UnsafePickle, BrokenPickle):
        raise
    except DECODE_ERRORS as exc:
        raise BrokenPickle(_one_line(exc)) from None


def load_torch(path: Path, allowed: Mapping[str, Any]) -> Any:
    """`torch.load` of a zip or legacy torch file, tensors on the CPU, globals limited to `allowed`
    plus `TENSOR_GLOBALS`. TorchScript archives are refused (torch.load would run them); a corrupted file
    raises `BrokenPickle`."""
    module = restricted_pickle_module({**TENSOR_GLOBALS, **allowed})
    try:
        if is_torchscript(path):
            raise UnsafePickle("a TorchScript archive (torch.jit.save), not a checkpoint of weights")
        with warnings.catch_warnings():
            # The legacy format stores each pickled module class's source for torch to compare with the loaded
            # class's; a stand-in has none (given one, it would differ, and torch would warn that it changed).
            warnings.filterwarnings("ignore", message=SOURCE_CHECK_WARNING, category=UserWarning)
            return torch.load(path, map_location="cpu", pickle_module=module, weights_only=False)
    except (UnsafePickle, BrokenPickle):
        raise
    except DECODE_ERRORS as exc:
        raise BrokenPickle(_one_line(exc)) from None


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def pickle_globals(path: Path) -> set[str]:
    """The globals a pickle or torch file names, read from its opcodes without unpickling anything (as far
    as a corrupted file can be read)."""
    streams: list[bytes] = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    if name.endswith(".pkl"):
                        streams.append(archive.read(name))
        else:
            streams.append(path.read_bytes())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):  # ValueError includes UnicodeDecodeError
        pass
    found: set[str] = set()
    for data in streams:
        found |= _globals_in(io.BytesIO(data))
    return found


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}


def _globals_in(stream: io.BytesIO, max_pickles: int = 8) -> set[str]:
    """Globals of up to `max_pickles` consecutive pickles (a legacy torch file holds several in a row).

    STACK_GLOBAL takes its module and name from the stack; they are strings pushed just before it, or
    fetched back from the memo (protocol 4 memoizes every string), so pushes and the memo are followed
    for strings; any other push counts as a non-string."""
    found: set[str] = set()
    for _ in range(max_pickles):
        pushed: list[str | None] = []
        memo: dict[int, str | None] = {}
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                name = opcode.name
                if name == "GLOBAL":
                    found.add(str(arg).replace(" ", "."))
                elif name == "STACK_GLOBAL" and len(pushed) >= 2 and None not in pushed[-2:]:
                    found.add(f"{pushed[-2]}.{pushed[-1]}")
                if name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif name in _PUT_OPS:
                    memo[int(str(arg))] = pushed[-1] if pushed else None
                elif name in _GET_OPS:
                    pushed.append(memo.get(int(str(arg))))
                elif name in _STRING_OPS:
                    pushed.append(str(arg))
                elif opcode.stack_after:
                    pushed.append(None)
        except (ValueError, EOFError, pickle.UnpicklingError):
            break
    return found


def module_state(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict of a pickled `nn.Module` read into stand-ins: parameters and persistent buffers of
    it and its children, keyed as `nn.Module.state_dict` keys them."""
    attributes = vars(obj)
    state: dict[str, torch.Tensor] = {}
    transient = attributes.get("_non_persistent_buffers_set", set())
    for kind in ("_parameters", "_buffers"):
        for name, value in attributes.get(kind, {}).items():
            if value is not None and name not in transient:
                state[prefix + name] = value.detach()
    for name, child in attributes.get("_modules", {}).items():
        if child is not None:
            state.update(module_state(child, f"{prefix}{name}."))
    return state


def children(obj: Any) -> dict[str, Any]:
    """A pickled module's named children (stand-ins)."""
    return dict(vars(obj).get("_modules", {}))
