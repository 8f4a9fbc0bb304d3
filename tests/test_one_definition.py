"""Each concept the server, the client and the model layer share has one definition (issue 15)."""
from __future__ import annotations

import pytest
from google.protobuf.internal.encoder import _VarintBytes

from edgetpud.daemon import client, model, results, wire
from edgetpud.daemon.api import convert, lift
from edgetpud.daemon.client import _convert


def test_the_client_and_the_model_layer_answer_with_the_same_types() -> None:
    assert client.Class is model.Class is results.Class
    assert client.DetectedObject is model.DetectedObject is results.DetectedObject


def test_the_server_and_the_client_write_tensors_and_varints_one_way() -> None:
    assert convert.tensor is _convert.tensor is wire.tensor
    assert lift.encode_varint is _convert.encode_varint is wire.encode_varint


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2 ** 31, 2 ** 63 - 1])
def test_the_varint_is_protobufs_own(value: int) -> None:
    assert wire.encode_varint(value) == _VarintBytes(value)
