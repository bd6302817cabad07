// {{name}}: a wulf inventory backend in JavaScript. Serves the nodes its configuration lists:
// `[plugin.{{name}}.config] nodes = { n001 = "aa:bb:cc:dd:ee:01" }` (node id = MAC).
import { config } from 'wulf:plugin/host@{{api}}';

function node(id, mac) {
  // Options may be left out (undefined); lists and bools must be given.
  return {
    id,
    profiles: [],
    systemOverlays: [],
    runtimeOverlays: [],
    kernel: { args: [] },
    networkDevices: [{ name: 'default', hwaddr: mac.toLowerCase(), primary: true, tags: [] }],
    ipmi: { tags: [] },
    tags: [],
    resources: [],
    disks: [],
    filesystems: [],
    discoverable: false,
  };
}

function configured() {
  let nodes;
  try {
    nodes = JSON.parse(config()).nodes ?? {};
  } catch (e) {
    throw { tag: 'config', val: String(e) };
  }
  return Object.keys(nodes).sort().map((id) => node(id, nodes[id]));
}

export const backend = {
  listNodes() {
    return configured();
  },
  listProfiles() {
    return [];
  },
  lookupHwaddr(hwaddr) {
    return configured().find((n) => n.networkDevices.some((d) => d.hwaddr === hwaddr));
  },
  acceptDiscovered(hwaddr) {
    return undefined;
  },
};
