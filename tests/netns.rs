//! Network namespaces for tests and benchmarks (root only), made with `ip netns` and deleted
//! when dropped: one with a tap device for a VM's NIC, or two joined by a veth pair. A thread
//! can enter one ([`Netns::inside`]) so the sockets it opens live there.

use std::process::Command;

use crate::oci::run;

pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A new namespace with its loopback up.
    pub fn new(prefix: &str) -> Netns {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let ns = Netns {
            name: format!("{prefix}-{}-{nanos}", std::process::id()),
        };
        run(Command::new("ip").args(["netns", "add", &ns.name]));
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A new namespace with `tap0` up at 10.99.0.1/24, for a VM's NIC.
    pub fn with_tap(prefix: &str) -> Netns {
        let ns = Netns::new(prefix);
        ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
        ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "tap0"]);
        ns.ip(&["link", "set", "tap0", "up"]);
        ns
    }

    /// Two new namespaces joined by a veth pair, `veth0` in each, at `a` and `b` (CIDR).
    pub fn pair(prefix: &str, a: &str, b: &str) -> (Netns, Netns) {
        let (first, second) = (
            Netns::new(&format!("{prefix}-a")),
            Netns::new(&format!("{prefix}-b")),
        );
        first.ip(&[
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth1",
            "netns",
            &second.name,
        ]);
        second.ip(&["link", "set", "veth1", "name", "veth0"]);
        for (ns, addr) in [(&first, a), (&second, b)] {
            ns.ip(&["addr", "add", addr, "dev", "veth0"]);
            ns.ip(&["link", "set", "veth0", "up"]);
        }
        (first, second)
    }

    /// `ip <args>` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// `f` on a thread inside the namespace: the sockets it opens, and the threads it starts,
    /// live there.
    pub fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let handle =
                        std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                    nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("entering {path}: {e}"));
                    f()
                })
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}
