"""Recurrent state in the model layer (``[[state]]``, label maps) and the sequence bookkeeping."""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from edgetpud.daemon.errors import InvalidArgumentError, ModelError, NotFoundError, ResourceExhaustedError
from edgetpud.daemon.model.bundle import ModelBundle
from edgetpud.daemon.model.label_map import parse_label_map
from edgetpud.daemon.model.session import ModelSession
from edgetpud.daemon.model.state import StateInputSent
from edgetpud.daemon.sequences import Sequences, StateCarrier
from stateful import TOML, write_counter

X = np.ones((1, 4), np.float32)


def test_a_unary_call_starts_from_the_initial_state(tmp_path: Path) -> None:
    session = ModelSession(ModelBundle.load(write_counter(tmp_path / "c")))
    assert session.invoke_raw({"x": X})["state_out"].tolist() == [[1, 1, 1, 1]]
    assert session.invoke_raw({"x": X})["state_out"].tolist() == [[1, 1, 1, 1]]  # nothing carried
    # a unary call may still send the state itself
    sent = {"x": X, "state_in": np.full((1, 4), 5, np.float32)}
    assert session.invoke_raw(sent)["state_out"].tolist() == [[6, 6, 6, 6]]


def test_a_carried_state_feeds_the_state_inputs_and_refuses_them_sent(tmp_path: Path) -> None:
    session = ModelSession(ModelBundle.load(write_counter(tmp_path / "c")))
    inputs, _ = session.preprocess({"x": X}, "raw", state=[np.full((1, 4), 2, np.float32)])
    assert [a.tolist() for a in inputs] == [X.tolist(), [[2, 2, 2, 2]]]
    with pytest.raises(StateInputSent, match="recurrent state"):
        session.preprocess({"x": X, "state_in": X}, "raw", state=[X])


def test_the_initial_value_is_the_declared_one(tmp_path: Path) -> None:
    bundle = ModelBundle.load(write_counter(tmp_path / "c", TOML.replace("initial = 0", "initial = 10")))
    assert ModelSession(bundle).invoke_raw({"x": X})["state_out"].tolist() == [[11, 11, 11, 11]]


@pytest.mark.parametrize("state, message", [
    ('[state]\ninput = "state_in"\noutput = "state_out"\n', "must be a list of tables"),
    ('[[state]]\ninput = "nope"\noutput = "state_out"\n', "has no input 'nope'"),
    ('[[state]]\ninput = "state_in"\noutput = "nope"\n', "has no output 'nope'"),
    ('[[state]]\ninput = "x"\noutput = "state_out"\ninitial = "zero"\n', "initial must be a number"),
    ('[[state]]\ninput = "state_in"\noutput = "state_out"\ncolour = 1\n', "unknown key"),
    ('[[state]]\noutput = "state_out"\n', "'input' must name a tensor"),
    ('[[state]]\ninput = "state_in"\noutput = "state_out"\n[[state]]\ninput = "x"\noutput = "state_out"\n',
     "already in another state pair"),
    ('[[state]]\ninput = "state_in"\noutput = "state_out"\ninitial = inf\n', "initial must be finite"),
])
def test_bad_state_declarations_are_refused_at_load(tmp_path: Path, state: str, message: str) -> None:
    folder = write_counter(tmp_path / "c", 'task = "raw"\n' + state)
    with pytest.raises(ModelError, match=message):
        ModelBundle.load(folder)


def test_state_shapes_must_match(tmp_path: Path) -> None:
    from edgetpud.daemon.model.builder import ModelBuilder

    b = ModelBuilder()
    x = b.input("x", [1, 4], np.float32)
    s = b.input("s", [1, 1], np.float32)
    b.output(b.add(x, s, name="y"))
    (tmp_path / "model.tflite").write_bytes(b.build())
    (tmp_path / "model.toml").write_text('task = "raw"\n[[state]]\ninput = "s"\noutput = "y"\n')
    with pytest.raises(ModelError, match="shape and dtype must match"):
        ModelBundle.load(tmp_path)


def test_an_image_task_needs_its_image_as_input_0(traffic_data: Path, tmp_path: Path) -> None:
    (tmp_path / "model.tflite").write_bytes((traffic_data / "traffic_model.tflite").read_bytes())
    (tmp_path / "model.toml").write_text('task = "detect"\n')
    with pytest.raises(ModelError, match="declare recurrent inputs in"):
        ModelBundle.load(tmp_path)
    (tmp_path / "model.toml").write_text(
        'task = "detect"\n[[state]]\ninput = "normalized_input_image_tensor"\noutput = "raw_outputs/lstm_c"\n')
    with pytest.raises(ModelError):  # the image input cannot be a state (its shape differs, too)
        ModelBundle.load(tmp_path)


def test_the_traffic_label_map_is_read_by_class_index(traffic_data: Path) -> None:
    labels = parse_label_map((traffic_data / "traffic_label_map.pbtxt").read_text())
    assert labels == {0: "sedan", 1: "pickup_suv_van", 2: "large_veh_bus"}


@pytest.mark.parametrize("text, message", [
    ("item { name: 'a' }", "integer id of 1 or more"),
    ("item { name: 'a' id: 0 }", "0 is the background"),
    ("item { id: 1 }", "needs a quoted name"),
    ("item { name: 'a' id: 1 }\nitem { name: 'b' id: 1 }", "appears twice"),
    ("item { name: 'a' id: 1 } trailing", "not a label map"),
    ("", "not a label map"),
])
def test_bad_label_maps_are_refused(text: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        parse_label_map(text)


def test_a_label_map_with_gaps_keeps_them() -> None:
    assert parse_label_map('item { id: 1 name: "person" }\nitem { id: 3 display_name: "car" }') == {
        0: "person", 2: "car"}


# ---------------------------------------------------------------- sequences

class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_sequence_is_kept_until_it_ends_or_idles() -> None:
    clock = Clock()
    seqs = Sequences(limit=2, idle_s=5.0, clock=clock)
    first = seqs.carrier("m", 7, start=True)
    assert seqs.carrier("m", 7, start=False) is first
    with pytest.raises(NotFoundError, match="never started or has ended"):
        seqs.carrier("m", 8, start=False)
    with pytest.raises(NotFoundError, match="never started"):
        seqs.carrier("other", 7, start=False)  # ids are per model
    clock.now += 5.5
    with pytest.raises(NotFoundError, match="idle for more than 5 s"):
        seqs.carrier("m", 7, start=False)
    again = seqs.carrier("m", 7, start=True)
    assert again is not first
    seqs.end("m", 7)
    with pytest.raises(NotFoundError, match="never started or has ended"):
        seqs.carrier("m", 7, start=False)


def test_the_number_of_live_sequences_is_bounded() -> None:
    clock = Clock()
    seqs = Sequences(limit=2, idle_s=5.0, clock=clock)
    seqs.carrier("m", 1, start=True)
    seqs.carrier("m", "cam-b", start=True)
    with pytest.raises(ResourceExhaustedError, match="sequence_limit"):
        seqs.carrier("m", 3, start=True)
    seqs.carrier("m", 1, start=True)  # restarting a live one is no new sequence
    clock.now += 6
    seqs.carrier("m", 3, start=True)  # the idle ones made room
    assert len(seqs) == 1
    with pytest.raises(InvalidArgumentError, match="no sequence"):
        seqs.carrier("m", 0, start=True)


def test_a_carrier_forgets_a_state_carried_for_another_version() -> None:
    carrier = StateCarrier()
    carrier.commit("m@1", [X])
    assert carrier.values_for("m@1") == [X]
    assert carrier.values_for("m@2") is None
    carrier.reset()
    assert carrier.values_for("m@1") is None


def test_a_running_sequence_is_not_expired_under_its_request() -> None:
    clock = Clock()
    seqs = Sequences(limit=2, idle_s=1.0, clock=clock)

    async def run() -> None:
        carrier = seqs.carrier("m", 1, start=True)
        async with carrier.lock:
            clock.now += 10
            assert seqs.carrier("m", 1, start=False) is carrier
    asyncio.run(run())
