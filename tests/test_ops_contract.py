"""The contract of every pid op, checked alike for every entry of tests/ops_table.py (one test per property, one id
per op and device): the library loads and registers CPU (and, where built, CUDA) kernels; the kernels agree with the
reference (bit for bit where promised); the fake (meta) kernels give the real outputs' shapes, dtypes and strides;
torch.library.opcheck passes; the face compiles with torch.compile(fullgraph=True) into a graph that calls the op; the
PyTorch fallback (PID_DISABLE_EXTENSION=1) equals the reference; inputs on two devices are refused with the one
documented error; under autograd, and in a dtype the kernels do not take, the face runs the reference. The numerics
of each family are in tests/test_ops_<family>.py."""

from __future__ import annotations

import inspect
import os
import re

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._subclasses.fake_tensor import FakeTensorMode

import pid.ops
from pid import _extension
from pid.ops import reference
from conftest import REPO, needs_cuda, needs_ext, run_without_extension
from ops_table import BITS, BOUND, ENTRIES, TABLE, fresh_args, run_face, run_op, run_reference

OPS = [pytest.param(e, id=e.name) for e in TABLE]
# The device a check moves one input to: a meta tensor among CPU ones reaches the fake kernel's check, a CPU tensor
# among CUDA ones the CUDA kernel's.
OTHER_DEVICE = {"cpu": "meta", "cuda": "cpu"}


def on_devices(xfail: dict | None = None) -> list:
    """(entry, device) for every op on the CPU and on CUDA (skipped without a GPU); `xfail`: {(op, device): reason}."""
    params = []
    for e in TABLE:
        for device in ("cpu", "cuda"):
            marks = [needs_cuda] if device == "cuda" else []
            if xfail and (e.name, device) in xfail:
                marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=xfail[(e.name, device)]))
            params.append(pytest.param(e, device, id=f"{e.name}-{device}", marks=marks))
    return params


def is_tensor(a) -> bool:
    return isinstance(a, torch.Tensor)


def describe(entry, args) -> str:
    parts = [f"{str(a.dtype).removeprefix('torch.')}{list(a.shape)}" if is_tensor(a) else repr(a) for a in args]
    return f"pid::{entry.name}({', '.join(parts)})"


def assert_bits(got: tuple, want: tuple, what: str):
    assert len(got) == len(want), f"{what}: {len(got)} outputs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        meta, want_meta = (g.shape, g.dtype), (w.shape, w.dtype)
        assert meta == want_meta, f"{what}, output {i}: {meta} vs {want_meta}"
        assert torch.equal(g, w), f"{what}, output {i}: {int((g != w).sum())} of {g.numel()} elements differ"


def flat(result) -> list:
    return [] if result is None else list(result) if isinstance(result, tuple) else [result]


# ---- the table itself ----------------------------------------------------------------------------------------------
@needs_ext
def test_table_has_every_op():
    registered = {n.removeprefix("pid::") for n in torch._C._dispatch_get_all_op_names() if n.startswith("pid::")}
    assert sorted(ENTRIES) == sorted(registered - {"cpu_capability", "cpu_capabilities"})
    assert len(ENTRIES) == len(TABLE)


@pytest.mark.parametrize("entry", OPS)
def test_entry_is_complete(entry):
    samples = entry.samples("cpu")
    dtypes = {a.dtype for s in samples for a in s.args if is_tensor(a) and a.is_floating_point()}
    assert dtypes == set(entry.dtypes), f"the samples' dtypes {dtypes} are not the kernels' {entry.dtypes}"
    assert any(s.compile for s in samples), "no sample is compiled"
    assert any(all(is_tensor(s.args[i]) for i in entry.foreign) for s in samples), "no sample has the foreign inputs"
    assert callable(getattr(pid.ops, entry.name)) and callable(getattr(reference, entry.name))
    assert entry.tolerance in (BITS, BOUND)
    assert (REPO / "tests" / f"test_ops_{entry.family}.py").is_file()


# ---- the library and its kernels -----------------------------------------------------------------------------------
def test_library_loaded():
    if os.environ.get("PID_DISABLE_EXTENSION", "") not in ("", "0"):
        pytest.skip("PID_DISABLE_EXTENSION is set")
    assert _extension.available(), f"compiled extension not loaded: {_extension.LOAD_ERROR}"


@needs_ext
@pytest.mark.parametrize("entry,device", on_devices())
def test_registered(entry, device):
    if device == "cuda":  # a GPU is here: the library must have been built with its kernels
        assert _extension.has_cuda_kernels(), f"no CUDA kernels in pid._C ({_extension.LOAD_ERROR})"
    keys = ["CPU"] + (["CUDA"] if _extension.has_cuda_kernels() else [])
    for key in keys:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pid::{entry.name}", key), f"no {key} kernel"


@needs_ext
@pytest.mark.parametrize("entry,device", on_devices())
def test_kernel_agrees_with_reference(entry, device):
    """Same outputs (number, shapes, dtypes, devices) as the reference; bit for bit where the table says BITS (the
    float64 bounds of the others are tested in tests/test_ops_<family>.py)."""
    for s in entry.samples(device):
        got, want = run_op(entry, s.args, s.kwargs), run_reference(entry, s.args, s.kwargs)
        what = describe(entry, s.args)
        assert [(g.shape, g.dtype, g.device) for g in got] == [(w.shape, w.dtype, w.device) for w in want], what
        if entry.tolerance == BITS:
            assert_bits(got, want, what)


@needs_ext
@pytest.mark.parametrize("entry,device", on_devices())
def test_fake_and_meta_kernels(entry, device):
    op = getattr(torch.ops.pid, entry.name)
    for s in entry.samples(device):
        what = describe(entry, s.args)
        real = op(*fresh_args(entry, s.args), **s.kwargs)
        args = fresh_args(entry, s.args)
        with FakeTensorMode() as mode:
            fake = op(*(mode.from_tensor(a) if is_tensor(a) else a for a in args), **s.kwargs)
        meta = op(*(a.to("meta") if is_tensor(a) else a for a in s.args), **s.kwargs)
        assert len(flat(fake)) == len(flat(meta)) == len(flat(real)), what
        for f, m, r in zip(flat(fake), flat(meta), flat(real)):
            assert (f.shape, f.dtype, f.stride()) == (r.shape, r.dtype, r.stride()), f"fake: {what}"
            assert (m.device.type, m.shape, m.dtype) == ("meta", r.shape, r.dtype), f"meta: {what}"


@needs_ext
@pytest.mark.parametrize("entry,device", on_devices())
def test_opcheck(entry, device):
    op = getattr(torch.ops.pid, entry.name).default
    for s in entry.samples(device):
        torch.library.opcheck(op, fresh_args(entry, s.args), s.kwargs)


@needs_ext
@pytest.mark.parametrize("entry,device", on_devices())
def test_face_compiles_without_graph_breaks(entry, device):
    """torch.compile(fullgraph=True) of the face: one graph, which calls the op; the same bits as eager."""
    for s in (s for s in entry.samples(device) if s.compile):
        torch._dynamo.reset()
        counter = CompileCounterWithBackend("aot_eager")
        compiled = torch.compile(entry.face, backend=counter, fullgraph=True)
        what = describe(entry, s.args)
        assert_bits(run_face(entry, s.args, s.kwargs, compiled), run_face(entry, s.args, s.kwargs), what)
        assert counter.frame_count == 1, what
        called = {str(n.target) for g in counter.graphs for n in g.graph.nodes if n.op == "call_function"}
        assert called & {f"pid.{entry.name}", f"pid.{entry.name}.default"}, f"{what}: the graph calls {called}"


# ---- the fallback without the extension ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fallback_outputs(tmp_path_factory):
    """Every entry's CPU samples through its face in one process with PID_DISABLE_EXTENSION=1."""
    cases = {e.name: [(s.args, s.kwargs) for s in e.samples("cpu")] for e in TABLE}
    body = (f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
            "import ops_table\n"
            "out = {n: [ops_table.run_face(ops_table.ENTRIES[n], a, k) for a, k in c] for n, c in inp.items()}")
    return cases, run_without_extension(tmp_path_factory.mktemp("fallback"), cases, body)


@pytest.mark.parametrize("entry", OPS)
def test_fallback_without_extension_equals_reference(entry, fallback_outputs):
    cases, outputs = fallback_outputs
    assert len(outputs[entry.name]) == len(cases[entry.name])
    for (args, kwargs), got in zip(cases[entry.name], outputs[entry.name]):
        assert_bits(got, run_reference(entry, args, kwargs), describe(entry, args))


# ---- one device ----------------------------------------------------------------------------------------------------
def with_a_foreign_input(entry, device):
    """(index, args, kwargs, the others' device) for each input of entry.foreign moved to OTHER_DEVICE[device]."""
    s = next(s for s in entry.samples(device) if all(is_tensor(s.args[i]) for i in entry.foreign))
    anchor = next(a for a in s.args if is_tensor(a)).device
    for i in entry.foreign:
        args = list(s.args)
        args[i] = args[i].to(OTHER_DEVICE[device])
        yield i, tuple(args), s.kwargs, anchor


def one_device_error(prefix: str, anchor: torch.device, name: str, other: str) -> str:
    """The documented error (pid/ops/_face.py: check_one_device; the C++ checks word it alike)."""
    device = re.escape(str(anchor))
    return rf"{re.escape(prefix)}: all (inputs|tensors) must be on \w+'s device {device}, but {name} is on {other}"


QK_NORM_ROPE_CUDA_MESSAGE = ("pid::qk_norm_rope's CUDA check says 'k_weight must be on qkv's device cuda:0, got cpu' "
                             "(csrc/torch/attention_check.h), not the documented form")


@needs_ext
@pytest.mark.parametrize("entry,device", on_devices(xfail={("qk_norm_rope", "cuda"): QK_NORM_ROPE_CUDA_MESSAGE}))
def test_op_refuses_two_devices(entry, device):
    op = getattr(torch.ops.pid, entry.name)
    names = [a.name for a in op.default._schema.arguments]
    for i, args, kwargs, anchor in with_a_foreign_input(entry, device):
        error = one_device_error(f"pid::{entry.name}", anchor, names[i], OTHER_DEVICE[device])
        with pytest.raises(RuntimeError) as info:
            op(*args, **kwargs)
        assert re.search(error, str(info.value)), f"{describe(entry, args)}: {info.value}"


@pytest.mark.parametrize("entry,device", on_devices())
def test_face_refuses_two_devices(entry, device):
    face = getattr(pid.ops, entry.name)
    names = list(inspect.signature(face).parameters)
    for i, args, kwargs, anchor in with_a_foreign_input(entry, device):
        error = one_device_error(f"pid.ops.{entry.name}", anchor, names[i], OTHER_DEVICE[device])
        with pytest.raises(RuntimeError, match=error):
            entry.face(*args, **kwargs)


# ---- when the face runs the reference ------------------------------------------------------------------------------
def outputs_and_grad(fn, args: tuple, kwargs: dict, i: int):
    """fn's outputs with input i requiring grad, and that input's gradient of the outputs' sum (None: none reaches)."""
    args = list(args)
    args[i] = args[i].detach().requires_grad_()
    out = fn(*args, **kwargs)
    total = sum(o.float().sum() for o in out)
    if total.requires_grad:  # else no output depends on input i
        total.backward()
    return tuple(o.detach() for o in out), args[i].grad


@needs_ext
@pytest.mark.parametrize("entry,device", on_devices())
def test_face_under_autograd_runs_the_reference(entry, device):
    """The kernels have no backward: whichever input requires grad, the face computes the reference's outputs, and a
    gradient reaches that input when it reaches it through the reference (the values may differ in the order of the
    backward's sums)."""
    for s in entry.samples(device):
        for i, a in enumerate(s.args):
            if not (is_tensor(a) and a.is_floating_point()) or i in entry.mutated:
                continue
            what = f"{describe(entry, s.args)}, input {i} requiring grad"
            got, grad = outputs_and_grad(entry.face, fresh_args(entry, s.args), s.kwargs, i)
            want, want_grad = outputs_and_grad(entry.reference, s.args, s.kwargs, i)
            assert_bits(got, want, what)
            assert (grad is None) == (want_grad is None), what


@needs_ext
@pytest.mark.parametrize("entry,device", on_devices())
def test_face_in_other_dtypes_runs_the_reference(entry, device):
    """float64 inputs (no kernel takes them): the face computes exactly the reference's outputs."""
    assert torch.float64 not in entry.dtypes
    for s in entry.samples(device):
        args = tuple(a.double() if is_tensor(a) and a.is_floating_point() else a for a in fresh_args(entry, s.args))
        assert_bits(entry.face(*args, **s.kwargs), run_reference(entry, args, s.kwargs), describe(entry, args))
