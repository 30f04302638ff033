"""gee-h's own descriptor pool, so etcd's message types never enter protobuf's default pool.

python-etcd3, aetcd and etcd3aio register the same full names (mvccpb.KeyValue,
etcdserverpb.RangeRequest, ...) in the default pool, which refuses a second file defining
them: in a pool of our own both sets coexist and neither client sees the other's types.

The generated *_pb2 modules hold only serialized FileDescriptorProtos and call add_file
and message_class here. Classes come from protobuf's public message factory rather than
from protoc's gencode, which checks the runtime version against the protoc that made it:
the same modules then work with every protobuf from 4.21.6 to 7.x, upb or pure Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message_factory

POOL = descriptor_pool.DescriptorPool()

_make_class: Callable[[descriptor.Descriptor], Any]
if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
    _make_class = message_factory.GetMessageClass
else:  # protobuf 4.21: the factory's GetPrototype, deprecated (with a warning) from 4.24
    _make_class = message_factory.MessageFactory(POOL).GetPrototype  # type: ignore[attr-defined]


def add_file(serialized: bytes) -> descriptor.FileDescriptor:
    """Add one serialized FileDescriptorProto to POOL and return its descriptor.

    The files it imports must have been added first (the generated modules import them).
    """
    name = descriptor_pb2.FileDescriptorProto.FromString(serialized).name
    POOL.AddSerializedFile(serialized)
    return POOL.FindFileByName(name)


def message_class(file: descriptor.FileDescriptor, name: str, module: str) -> Any:
    """The message class for the top-level message `name` of `file`, named as in `module`.

    Nested enums and their values are class attributes already (the message metaclass
    adds them); nested messages are attached here, as protoc's gencode does.
    """
    return _build(file.message_types_by_name[name], module, "")


def _build(desc: descriptor.Descriptor, module: str, prefix: str) -> Any:
    cls = _make_class(desc)
    cls.__module__ = module
    cls.__qualname__ = prefix + desc.name
    for nested_name, nested in desc.nested_types_by_name.items():
        setattr(cls, nested_name, _build(nested, module, f"{cls.__qualname__}."))
    return cls


def enum_values(file: descriptor.FileDescriptor) -> dict[str, Any]:
    """Top-level enums of `file` and their values, as protoc's gencode defines them."""
    from google.protobuf.internal import enum_type_wrapper

    names: dict[str, Any] = {}
    for name, enum in file.enum_types_by_name.items():
        names[name] = enum_type_wrapper.EnumTypeWrapper(enum)
        names.update((value.name, value.number) for value in enum.values)
    return names
