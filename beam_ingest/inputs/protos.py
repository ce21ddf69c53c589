"""The protobuf messages of docs/input-formats.md, built from descriptors at import.

Building the descriptors here avoids a protoc step and generated files; the field numbers
and types are those of PyChunkedGraph's `edges.proto` and `components.proto`.
"""
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_BYTES = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
_UINT64 = descriptor_pb2.FieldDescriptorProto.TYPE_UINT64
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED

_pool = descriptor_pool.DescriptorPool()


def _file(name, package, messages):
    proto = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3")
    for msg_name, fields in messages:
        msg = proto.message_type.add(name=msg_name)
        for number, (field_name, ftype, label, type_name) in enumerate(fields, start=1):
            field = msg.field.add(name=field_name, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name
            if ftype == _UINT64 and label == _REPEATED:
                field.options.packed = True
    _pool.Add(proto)


_file("beam_ingest/edges.proto", "edges", [
    ("EdgesMsg", [("node_ids1", _BYTES, _OPTIONAL, None), ("node_ids2", _BYTES, _OPTIONAL, None),
                  ("affinities", _BYTES, _OPTIONAL, None), ("areas", _BYTES, _OPTIONAL, None)]),
    ("ChunkEdgesMsg", [("in_chunk", _MESSAGE, _OPTIONAL, ".edges.EdgesMsg"),
                       ("cross_chunk", _MESSAGE, _OPTIONAL, ".edges.EdgesMsg"),
                       ("between_chunk", _MESSAGE, _OPTIONAL, ".edges.EdgesMsg")]),
])
_file("beam_ingest/components.proto", "components", [
    ("ChunkComponentsMsg", [("components", _UINT64, _REPEATED, None)]),
])

EdgesMsg = message_factory.GetMessageClass(_pool.FindMessageTypeByName("edges.EdgesMsg"))
ChunkEdgesMsg = message_factory.GetMessageClass(_pool.FindMessageTypeByName("edges.ChunkEdgesMsg"))
ChunkComponentsMsg = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("components.ChunkComponentsMsg"))
