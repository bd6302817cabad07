// {{name}}: a wulf image transform in JavaScript. Drops /usr/share/doc from the image and adds
// /etc/{{name}} naming the image it was built into.

// One image build is one instance: state kept between its calls lives here.
let image = '';

const dropped = (path) => path === '/usr/share/doc' || path.startsWith('/usr/share/doc/');

export const transform = {
  begin(name) {
    image = name;
  },
  filter(entries) {
    return entries.map((e) => (dropped(e.path) ? { tag: 'drop' } : { tag: 'keep' }));
  },
  rewrite(entry, content) {
    return { tag: 'keep' };
  },
  finish() {
    return [{
      path: '/etc/{{name}}',
      mode: 0o644,
      uid: 0,
      gid: 0,
      content: { tag: 'regular', val: new TextEncoder().encode(`built into ${image}\n`) },
    }];
  },
};
