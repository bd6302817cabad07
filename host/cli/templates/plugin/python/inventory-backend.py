"""{{name}}: a wulf inventory backend in Python. Serves the nodes its configuration lists:
`[plugin.{{name}}.config] nodes = { n001 = "aa:bb:cc:dd:ee:01" }` (node id = MAC)."""
import json
from typing import List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import Ipmi, Kernel, NetDevice, Node, PluginError_Config


def node(id: str, mac: str) -> Node:
    """A node record with one network device; every field of the record must be given."""
    device = NetDevice(name="default", device_type=None, onboot=None, device=None,
                       hwaddr=mac.lower(), ipaddr=None, netmask=None, gateway=None,
                       ipaddr6=None, prefixlen6=None, gateway6=None, mtu=None, primary=True,
                       tags=[])
    ipmi = Ipmi(username=None, password=None, ipaddr=None, gateway=None, netmask=None,
                port=None, interface=None, escape_char=None, write=None, template=None, tags=[])
    return Node(id=id, comment=None, cluster=None, profiles=[], image=None,
                ipxe_template=None, system_overlays=[], runtime_overlays=[], init=None,
                root=None, kernel=Kernel(version=None, args=[]), primary_network=None,
                network_devices=[device], ipmi=ipmi, tags=[], resources=[], disks=[],
                filesystems=[], asset_key=None, discoverable=False)


def configured() -> List[Node]:
    try:
        nodes = json.loads(host.config()).get("nodes", {})
    except ValueError as e:
        raise Err(PluginError_Config(str(e)))
    return [node(id, mac) for id, mac in sorted(nodes.items())]


class Backend(exports.Backend):
    """The exported interface `backend`: the class is named after it."""

    def list_nodes(self) -> List[Node]:
        return configured()

    def list_profiles(self) -> List[Node]:
        return []

    def lookup_hwaddr(self, hwaddr: str) -> Optional[Node]:
        for n in configured():
            if any(d.hwaddr == hwaddr for d in n.network_devices):
                return n
        return None

    def accept_discovered(self, hwaddr: str) -> Optional[Node]:
        return None
