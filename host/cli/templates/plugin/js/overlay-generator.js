// {{name}}: a wulf overlay generator in JavaScript. Writes /etc/motd for every node.
// The import specifier carries the WIT package's version.
import { log } from 'wulf:plugin/host@{{api}}';

// The world exports the interface `node-generator`: an object of that name in camelCase whose
// methods are its functions.
export const nodeGenerator = {
  generate(node, server) {
    try {
      log('info', `writing /etc/motd for ${node.id}`, [{ key: 'image', value: node.image ?? '' }]);
      return [{
        path: '/etc/motd',
        mode: 0o644,
        uid: 0,
        gid: 0,
        content: { tag: 'regular', val: new TextEncoder().encode(`Welcome to ${node.id}\n`) },
      }];
    } catch (e) {
      // Anything thrown that is not a plugin-error traps ("crashed"); this names the cause.
      throw { tag: 'failed', val: String(e) };
    }
  },
};
