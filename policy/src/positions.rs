//! Ascending lists of rule positions: filing in config order, and scanning
//! for the first match below the best found so far.

/// Appends `position` unless it is already last: rules are filed in
/// ascending order, and a rule naming one key twice is filed once.
pub(crate) fn push_once(list: &mut Vec<u32>, position: u32) {
    if list.last() != Some(&position) {
        list.push(position);
    }
}

/// The first position in `list` below `best` that `matches`, into `best`.
/// `list` is ascending, so the scan stops at `best`: whatever lies beyond
/// could not be the first match in config order.
pub(crate) fn scan_list(list: &[u32], best: &mut u32, matches: &mut impl FnMut(u32) -> bool) {
    for &position in list {
        if position >= *best {
            break;
        }
        if matches(position) {
            *best = position;
            break;
        }
    }
}
