//! [`PrefixTrie`]: rule positions filed by network, and, for one address,
//! the positions of every rule naming a network that contains it, without
//! trying the networks one by one.
//!
//! A path-compressed binary trie on the address bits, one for v4 and one for
//! v6, with v4 bits left-aligned in a `u128` like v6 ones. Each node stands
//! for one prefix (its first `len` bits), holds the positions of the rules
//! naming exactly that network, ascending, and has at most two children:
//! longer prefixes, by their next bit. A lookup follows the address's bits
//! from the root: the nodes on its path whose prefix it shares are exactly
//! the networks containing it, at most 33 (v4) or 129 (v6) of them, however
//! many rules there are. Chains of single children are compressed, so the
//! trie has fewer than two nodes per network.
//!
//! IPv4-mapped IPv6 addresses are looked up in both tries, as
//! [`CidrSet::contains`] treats them: a v4 network contains the mapped form of
//! its addresses, a v6 network only v6 addresses.

use std::net::IpAddr;

use crate::cidr::{self, CidrSet, Family};
use crate::positions::push_once;

/// Rule positions by the networks of a `cidrs` or `clients` list.
#[derive(Clone, Debug)]
pub(crate) struct PrefixTrie {
    v4: Nodes,
    v6: Nodes,
    /// The smallest position filed (the first): a scan that has already
    /// found a match before it need not walk the trie.
    first: u32,
}

/// One family's trie; node 0 is the root (the empty prefix), created with
/// the first network.
#[derive(Clone, Debug, Default)]
struct Nodes(Vec<Node>);

#[derive(Clone, Debug)]
struct Node {
    /// The prefix, left-aligned; the bits beyond `len` are zero.
    bits: u128,
    len: u8,
    /// By the bit after the prefix; 0 for none (the root is no one's child).
    children: [usize; 2],
    /// The rules naming exactly this network, ascending.
    positions: Vec<u32>,
}

// === impl PrefixTrie ===

impl Default for PrefixTrie {
    fn default() -> PrefixTrie {
        PrefixTrie {
            v4: Nodes::default(),
            v6: Nodes::default(),
            first: u32::MAX,
        }
    }
}

impl PrefixTrie {
    /// Files the rule at `position` under each of its networks; positions
    /// must come in ascending order.
    pub(crate) fn insert(&mut self, networks: &CidrSet, position: u32) {
        self.first = self.first.min(position);
        for cidr in networks.iter() {
            let prefix = cidr.prefix();
            let nodes = match prefix.family {
                Family::V4 => &mut self.v4,
                Family::V6 => &mut self.v6,
            };
            nodes.insert(prefix.bits, prefix.len, position);
        }
    }

    /// Calls `each` with the positions of the rules naming a network that
    /// contains `ip`, one ascending list per network (a rule naming two
    /// such networks comes in both). Nothing when `best` is already at or
    /// below every position filed.
    pub(crate) fn containing(&self, ip: IpAddr, best: u32, mut each: impl FnMut(&[u32])) {
        if best <= self.first {
            return;
        }
        let (v4, v6) = cidr::keys(ip);
        if let Some(key) = v4 {
            self.v4.containing(key, &mut each);
        }
        if let Some(key) = v6 {
            self.v6.containing(key, &mut each);
        }
    }
}

// === impl Nodes ===

impl Nodes {
    fn insert(&mut self, bits: u128, len: u8, position: u32) {
        if self.0.is_empty() {
            self.0.push(Node::new(0, 0));
        }
        let mut at = 0;
        // Invariant: node `at`'s prefix is a prefix of the new one.
        loop {
            let (node_len, children) = (self.0[at].len, self.0[at].children);
            if node_len == len {
                push_once(&mut self.0[at].positions, position);
                return;
            }
            // node_len < len <= 128, so the bit exists.
            let side = bit(bits, node_len);
            let child = children[side];
            if child == 0 {
                let leaf = self.push(Node::leaf(bits, len, position));
                self.0[at].children[side] = leaf;
                return;
            }
            let (child_bits, child_len) = (self.0[child].bits, self.0[child].len);
            let common = shared_len(bits, child_bits).min(len).min(child_len);
            if common == child_len {
                at = child;
                continue;
            }
            // The new network and the child's part at bit `common` (or the
            // new one is the shorter): a node at `common` goes between them.
            let between = if common == len {
                self.push(Node::leaf(bits, len, position))
            } else {
                let between = self.push(Node::new(bits & mask(common), common));
                let leaf = self.push(Node::leaf(bits, len, position));
                self.0[between].children[bit(bits, common)] = leaf;
                between
            };
            self.0[between].children[bit(child_bits, common)] = child;
            self.0[at].children[side] = between;
            return;
        }
    }

    fn push(&mut self, node: Node) -> usize {
        self.0.push(node);
        self.0.len() - 1
    }

    /// Walks from the root along `key`'s bits while the prefixes match.
    fn containing(&self, key: u128, each: &mut impl FnMut(&[u32])) {
        let mut at = 0;
        while let Some(node) = self.0.get(at) {
            if (key ^ node.bits) & mask(node.len) != 0 {
                return;
            }
            if !node.positions.is_empty() {
                each(&node.positions);
            }
            if node.len >= 128 {
                return;
            }
            at = node.children[bit(key, node.len)];
            if at == 0 {
                return;
            }
        }
    }
}

// === impl Node ===

impl Node {
    fn new(bits: u128, len: u8) -> Node {
        Node {
            bits,
            len,
            children: [0; 2],
            positions: Vec::new(),
        }
    }

    fn leaf(bits: u128, len: u8, position: u32) -> Node {
        Node {
            positions: vec![position],
            ..Node::new(bits, len)
        }
    }
}

/// Bit `i` (0 = most significant) of `bits`, as a child index; `i < 128`.
fn bit(bits: u128, i: u8) -> usize {
    usize::from((bits >> (127 - u32::from(i))) & 1 == 1)
}

/// The mask of the first `len` bits.
fn mask(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// How many leading bits `a` and `b` share.
fn shared_len(a: u128, b: u128) -> u8 {
    // At most 128.
    u8::try_from((a ^ b).leading_zeros()).unwrap_or(128)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;
    use crate::cidr::Cidr;

    /// Every position whose networks contain `ip`, as the trie says, sorted
    /// and deduplicated.
    fn looked_up(trie: &PrefixTrie, ip: IpAddr) -> Vec<u32> {
        let mut found = Vec::new();
        trie.containing(ip, u32::MAX, |list| {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "ascending: {list:?}");
            found.extend_from_slice(list);
        });
        found.sort_unstable();
        found.dedup();
        found
    }

    fn set(texts: &[&str]) -> CidrSet {
        CidrSet::new(texts.iter().map(|t| Cidr::parse(t).expect(t)).collect())
    }

    #[test]
    fn nested_and_mapped() {
        let mut trie = PrefixTrie::default();
        let rules = [
            set(&["10.0.0.0/8"]),
            set(&["10.1.2.0/24", "fd00::/8"]),
            set(&["10.1.0.0/16"]),
            set(&["0.0.0.0/0"]),
            set(&["::ffff:0:0/96"]),
            set(&["10.1.2.3", "10.1.2.3/32"]),
            set(&["::/0"]),
        ];
        for (position, rule) in (0..).zip(&rules) {
            trie.insert(rule, position);
        }
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        let cases: &[(&str, &[u32])] = &[
            ("10.1.2.3", &[0, 1, 2, 3, 5]),
            ("10.1.2.4", &[0, 1, 2, 3]),
            ("10.1.3.4", &[0, 2, 3]),
            ("11.0.0.1", &[3]),
            ("::ffff:10.1.2.3", &[0, 1, 2, 3, 4, 5, 6]),
            ("::10.1.2.3", &[6]),
            ("fd00::1", &[1, 6]),
            ("2001:db8::1", &[6]),
        ];
        for &(addr, want) in cases {
            assert_eq!(looked_up(&trie, ip(addr)), want, "{addr}");
        }
        // A scan that already has position 0 walks nothing.
        trie.containing(ip("10.1.2.3"), 0, |list| panic!("walked to {list:?}"));
    }

    fn arb_cidr() -> impl Strategy<Value = Cidr> {
        // Few distinct high bits, so networks nest and share prefixes.
        prop_oneof![
            (0u32..8, 0u8..=32, any::<u32>()).prop_map(|(top, len, low)| {
                let bits = (top << 29) | (low >> 3);
                let masked = if len == 0 {
                    0
                } else {
                    bits & (u32::MAX << (32 - len))
                };
                Cidr::parse(&format!("{}/{len}", Ipv4Addr::from(masked))).expect("v4")
            }),
            (0u128..8, 0u8..=128, any::<u128>(), any::<bool>()).prop_map(
                |(top, len, low, mapped)| {
                    let bits = if mapped {
                        (0xffff << 32) | (low & 0xffff_ffff)
                    } else {
                        (top << 125) | (low >> 3)
                    };
                    let masked = bits & mask(len);
                    Cidr::parse(&format!("{}/{len}", Ipv6Addr::from(masked))).expect("v6")
                }
            ),
        ]
    }

    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u32..8, any::<u32>())
                .prop_map(|(top, low)| IpAddr::from(Ipv4Addr::from((top << 29) | (low >> 3)))),
            (0u128..8, any::<u128>())
                .prop_map(|(top, low)| IpAddr::from(Ipv6Addr::from((top << 125) | (low >> 3)))),
            any::<u32>().prop_map(|v4| IpAddr::from(Ipv4Addr::from(v4).to_ipv6_mapped())),
        ]
    }

    proptest! {
        /// The trie finds exactly the rules whose networks contain the address.
        #[test]
        fn agrees_with_contains(
            rules in prop::collection::vec(prop::collection::vec(arb_cidr(), 1..3), 0..30),
            probes in prop::collection::vec(arb_ip(), 1..8),
        ) {
            let rules: Vec<CidrSet> = rules.into_iter().map(CidrSet::new).collect();
            let mut trie = PrefixTrie::default();
            for (position, rule) in (0..).zip(&rules) {
                trie.insert(rule, position);
            }
            // The networks themselves as addresses, too.
            let mut probes = probes;
            probes.extend(rules.iter().flat_map(CidrSet::iter).map(|c| {
                let prefix = c.prefix();
                match prefix.family {
                    Family::V4 => IpAddr::from(Ipv4Addr::from((prefix.bits >> 96) as u32)),
                    Family::V6 => IpAddr::from(Ipv6Addr::from(prefix.bits)),
                }
            }));
            for ip in probes {
                let want: Vec<u32> = (0..)
                    .zip(&rules)
                    .filter(|(_, rule)| rule.contains(ip))
                    .map(|(position, _)| position)
                    .collect();
                prop_assert_eq!(looked_up(&trie, ip), want, "{}", ip);
            }
        }
    }
}
