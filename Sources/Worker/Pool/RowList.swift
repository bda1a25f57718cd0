// The pool's two lists, written once: its idle servers and its waiting clients are rows of a `Table`
// linked by index (no allocation, O(1) removal from the middle), with the ends and length kept in the
// pool (`Pool.idle`, `Pool.waiting`). Who is on which list, and when, is the transition functions'
// business (Session/States.swift); this file only links and unlinks.

/// A row's place on the one pool list it can be on (a client: the wait queue; a server: the idle list):
/// the indices of its neighbours in the same table, -1 at an end and off the list.
struct RowLinks {
    var next: Int32 = -1
    var prev: Int32 = -1
}

/// A pool list's ends (-1: empty) and length.
struct RowList {
    var head: Int32 = -1
    var tail: Int32 = -1
    var count = 0
}

/// A table row that can be on a pool list.
protocol ListedRow: TableRecord {
    var links: RowLinks { get set }
}

extension Table where Record: ListedRow {
    @inline(__always)
    func pushHead(_ i: Int32, _ list: inout RowList) {
        self[i].links = RowLinks(next: list.head, prev: -1)
        if list.head >= 0 { self[list.head].links.prev = i } else { list.tail = i }
        list.head = i
        list.count += 1
    }

    @inline(__always)
    func pushTail(_ i: Int32, _ list: inout RowList) {
        self[i].links = RowLinks(next: -1, prev: list.tail)
        if list.tail >= 0 { self[list.tail].links.next = i } else { list.head = i }
        list.tail = i
        list.count += 1
    }

    @inline(__always)
    func unlink(_ i: Int32, _ list: inout RowList) {
        let l = self[i].links
        if l.prev >= 0 { self[l.prev].links.next = l.next } else { list.head = l.next }
        if l.next >= 0 { self[l.next].links.prev = l.prev } else { list.tail = l.prev }
        self[i].links = RowLinks()
        list.count -= 1
    }
}
