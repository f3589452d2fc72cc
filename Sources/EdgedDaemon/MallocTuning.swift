// glibc malloc settings for a daemon that lives for months in a few MiB (issue [4], README "Memory").
// - Arenas: glibc gives each thread that allocates its own arena, up to 8 per core. edged's threads (NIO's event
//   loops, Swift's cooperative pool, Dispatch) then each hold a partly used heap of their own; measured with
//   `edged-bench memory` (20 pods, joined), one arena instead of four saved 0.8–1.7 MB of anonymous memory.
//   MALLOC_ARENA_MAX in the environment (glibc's own variable) still wins.
// - Trim: free() returns memory to the kernel only from the top of a heap; pages freed in the middle of an arena stay
//   resident until malloc_trim(3) gives them back (madvise). edged trims every trimInterval.

import CMalloc
import Glibc

public enum MallocTuning {
    public static let defaultArenas: Int32 = 1
    public static let trimInterval: Duration = .seconds(30)

    /// Caps the number of malloc arenas, unless MALLOC_ARENA_MAX is set. Call before other threads start.
    public static func limitArenas(_ arenas: Int32 = defaultArenas) {
        guard getenv("MALLOC_ARENA_MAX") == nil else { return }
        _ = mallopt(M_ARENA_MAX, arenas)
    }

    /// Returns free pages of every arena to the kernel; true when some memory was released.
    @discardableResult
    public static func trim() -> Bool { malloc_trim(0) == 1 }
}
