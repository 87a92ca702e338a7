"""The pack's example workflows (comfyui/example_workflows/, both formats) name only existing node ids, inputs and
types: the pack's nodes as their schemas define them (through tests/comfyui_stub.py), ComfyUI's core nodes as
comfyui_stub.CORE_NODES copies them from ComfyUI's source. Widget values fit their inputs, links join an output to
an input of the same type, the UI and API files describe the same graph, and the files are what
scripts/comfyui_workflows.py writes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import comfyui_stub  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "comfyui" / "example_workflows"
NAMES = ["pid_flux_ksampler", "pid_flux_early_stop", "pid_flux_ksampler_advanced"]
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    """class_type -> {"inputs": [(name, type or options, options dict, optional)], "output": [types]}."""
    comfyui_stub.install(tmp_path_factory.mktemp("models"))
    try:
        import pid.comfyui

        extension = asyncio.run(pid.comfyui.comfy_entrypoint())
        asyncio.run(extension.on_load())
        infos = {n.GET_SCHEMA().node_id: n.GET_SCHEMA().get_v1_info() for n in asyncio.run(extension.get_node_list())}
    finally:
        comfyui_stub.uninstall()
        for name in [n for n in sys.modules if n.startswith("pid.comfyui.")]:
            del sys.modules[name]
    out = {}
    for cls, info in infos.items():
        out[cls] = {"inputs": [(n, t, o, group == "optional") for group in ("required", "optional")
                               for n, (t, o) in info["input"].get(group, {}).items()], "output": info["output"]}
    for cls, info in comfyui_stub.CORE_NODES.items():
        out[cls] = {"inputs": [(n, t, o, group == "optional") for group in ("required", "optional")
                               for n, (t, o) in info.get(group, {}).items()], "output": info["output"]}
    return out


def _is_widget(io_type) -> bool:
    return isinstance(io_type, list) or io_type in WIDGET_TYPES or str(io_type).startswith("FILES:")


def _check_value(cls, name, io_type, options, value):
    where = f"{cls}.{name} = {value!r}"
    if isinstance(io_type, list):
        assert value in io_type, f"{where}: not one of its options"
    elif str(io_type).startswith("FILES:"):
        assert isinstance(value, str) and value, where  # a model file name: the user's folder decides
    elif io_type == "STRING":
        assert isinstance(value, str), where
    elif io_type in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        assert io_type == "FLOAT" or isinstance(value, int), f"{where}: not an integer"
        assert options.get("min", value) <= value <= options.get("max", value), f"{where}: out of range"


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_names_existing_nodes_inputs_and_types(specs, name):
    graph = json.loads((FOLDER / "api" / f"{name}.json").read_text())
    for node_id, node in graph.items():
        cls = node["class_type"]
        assert cls in specs, f"node {node_id}: unknown class_type {cls}"
        spec = {n: (t, o, optional) for n, t, o, optional in specs[cls]["inputs"]}
        assert set(node["inputs"]) <= set(spec), f"{cls}: unknown inputs {set(node['inputs']) - set(spec)}"
        missing = {n for n, (_, _, optional) in spec.items() if not optional} - set(node["inputs"])
        assert not missing, f"{cls} (node {node_id}) lacks required inputs {missing}"
        for input_name, value in node["inputs"].items():
            io_type, options, _ = spec[input_name]
            if isinstance(value, list):  # a link [node id, output slot]
                source = graph[value[0]]
                out_type = specs[source["class_type"]]["output"][value[1]]
                assert out_type == io_type, f"{cls}.{input_name} ({io_type}) linked to a {out_type} output"
            else:
                assert _is_widget(io_type), f"{cls}.{input_name} is a {io_type} socket, given a value"
                _check_value(cls, input_name, io_type, options, value)


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_names_existing_nodes_inputs_and_types(specs, name):
    ui = json.loads((FOLDER / f"{name}.json").read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = {link[0]: link for link in ui["links"]}
    for node in ui["nodes"]:
        cls = node["type"]
        assert cls in specs, f"node {node['id']}: unknown type {cls}"
        inputs = specs[cls]["inputs"]
        sockets = {n: (t, optional) for n, t, _, optional in inputs if not _is_widget(t)}
        for socket in node["inputs"]:
            assert socket["name"] in sockets and socket["type"] == sockets[socket["name"]][0], f"{cls}: {socket}"
            if socket["link"] is None:
                assert sockets[socket["name"]][1], f"{cls}.{socket['name']} is required but unconnected"
            else:
                link = links[socket["link"]]
                assert link[3] == node["id"] and node["inputs"][link[4]] is socket and link[5] == socket["type"]
                assert specs[nodes[link[1]]["type"]]["output"][link[2]] == socket["type"]
        assert {s["name"] for s in node["inputs"]} >= {n for n, (_, opt) in sockets.items() if not opt}
        assert [o["type"] for o in node["outputs"]] == specs[cls]["output"]
        values = list(node["widgets_values"])
        for input_name, io_type, options, _ in inputs:  # widgets in schema order, + the seed's control value
            if not _is_widget(io_type):
                continue
            assert values, f"{cls}: widgets_values ends before {input_name}"
            _check_value(cls, input_name, io_type, options, values.pop(0))
            if options.get("control_after_generate"):
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize"), f"{cls}.{input_name}"
        assert values == [], f"{cls}: more widgets_values than widgets: {values}"


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_files_are_the_same_graph(specs, name):
    ui = json.loads((FOLDER / f"{name}.json").read_text())
    api = json.loads((FOLDER / "api" / f"{name}.json").read_text())
    assert {str(n["id"]): n["type"] for n in ui["nodes"]} == {i: n["class_type"] for i, n in api.items()}
    for node in ui["nodes"]:
        api_inputs = api[str(node["id"])]["inputs"]
        ui_links = {s["name"]: [str(ui_link[1]), ui_link[2]] for s in node["inputs"] if s["link"] is not None
                    for ui_link in ui["links"] if ui_link[0] == s["link"]}
        assert ui_links == {k: v for k, v in api_inputs.items() if isinstance(v, list)}
        widget_values = [v for k, v in api_inputs.items() if not isinstance(v, list)]
        ui_values = [v for v in node["widgets_values"] if v not in ("fixed",)]
        assert sorted(map(json.dumps, ui_values)) == sorted(map(json.dumps, widget_values))


def test_the_early_stop_workflows_stop_at_24_of_28():
    stop = json.loads((FOLDER / "api" / "pid_flux_early_stop.json").read_text())["7"]["inputs"]
    assert (stop["steps"], stop["stop_at_step"]) == (28, 24)
    advanced = json.loads((FOLDER / "api" / "pid_flux_ksampler_advanced.json").read_text())
    assert (advanced["7"]["inputs"]["end_at_step"], advanced["7"]["inputs"]["return_with_leftover_noise"]) == (24,
                                                                                                               "enable")
    assert (advanced["11"]["inputs"]["end_at_step"], advanced["11"]["inputs"]["steps"]) == (24, 28)


def test_files_are_what_the_script_writes():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "comfyui_workflows.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
