"""The Store servicer's WriteBlob parser: data messages as views of the received bytes."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from modelrunner.store.servicer import parse_write_request
from modelrunner.v1 import store_pb2


@pytest.mark.parametrize("size", [0, 1, 127, 128, 1 << 20])
def test_a_data_message_is_a_view_of_the_received_bytes(size: int):
    raw = store_pb2.WriteBlobRequest(data=b"x" * size).SerializeToString()
    view = parse_write_request(raw)
    assert isinstance(view, memoryview) and view.obj is raw and view == b"x" * size


def test_other_messages_are_parsed_by_protobuf():
    header = store_pb2.WriteBlobRequest(header=store_pb2.BlobHeader(digest="sha256:ab", size=3))
    assert parse_write_request(header.SerializeToString()) == header
    assert parse_write_request(b"") == store_pb2.WriteBlobRequest()
    twice = b"\x12\x01a\x12\x01b"  # two data fields: the last wins, as protobuf says
    assert parse_write_request(twice) == store_pb2.WriteBlobRequest(data=b"b")
    with pytest.raises(DecodeError):
        parse_write_request(b"\x12\x05abc")
