// The even split of a pool over the workers: what a worker may hold before the supervisor says otherwise.

public enum PoolShare {
    /// size / workers, the remainder going to the lowest slots, so the shares add up to `size` exactly.
    @inlinable
    public static func even(size: Int, slot: Int, workers: Int) -> Int {
        let n = max(1, workers)
        let s = max(0, size)
        return s / n + (slot < s % n ? 1 : 0)
    }
}
