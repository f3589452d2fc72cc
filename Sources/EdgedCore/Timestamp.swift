// Wall-clock timestamps and their RFC 3339 text, without Foundation.

import Glibc

/// A point in wall-clock time, nanoseconds since the Unix epoch (UTC).
public struct Timestamp: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public static func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(nanoseconds: Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec))
    }

    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.nanoseconds < b.nanoseconds }

    public var seconds: Int64 { nanoseconds / 1_000_000_000 }

    /// "2026-11-21T23:59:59Z", the form the Kubernetes API uses for metav1.Time.
    public var rfc3339: String { format(fraction: false) }

    /// "2026-11-21T23:59:59.123456789Z", the form CRI log lines use.
    public var rfc3339Nano: String { format(fraction: true) }

    public var description: String { rfc3339 }

    public func adding(seconds s: Double) -> Timestamp {
        Timestamp(nanoseconds: nanoseconds + Int64(s * 1e9))
    }

    /// Seconds from `self` to `other` (negative when `other` is earlier).
    public func seconds(until other: Timestamp) -> Double {
        Double(other.nanoseconds - nanoseconds) / 1e9
    }

    private func format(fraction: Bool) -> String {
        var t = time_t(seconds)
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
        }
        var out = "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2))T"
        out += "\(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2))"
        if fraction {
            out += "." + pad(Int32(nanoseconds % 1_000_000_000), 9)
        }
        return out + "Z"
    }
}
