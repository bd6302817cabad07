"""{{name}}: a wulf overlay generator in Python. Writes /etc/motd for every node."""
from typing import List

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    FileContent_Regular,
    FileEntry,
    Node,
    PluginError_Failed,
    Server,
    Tag,
)


class NodeGenerator(exports.NodeGenerator):
    """The exported interface `node-generator`: the class is named after it."""

    def generate(self, node: Node, server: Server) -> List[FileEntry]:
        try:
            host.log(host.Level.INFO, f"writing /etc/motd for {node.id}",
                     [Tag(key="image", value=node.image or "")])
            return [
                FileEntry(
                    path="/etc/motd",
                    mode=0o644,
                    uid=0,
                    gid=0,
                    content=FileContent_Regular(f"Welcome to {node.id}\n".encode()),
                )
            ]
        except Exception as e:
            # An uncaught exception traps ("crashed"); this names the cause instead.
            raise Err(PluginError_Failed(str(e)))
