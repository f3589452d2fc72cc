// The platform an image is for, and the host's, in OCI terms (os, architecture, variant).

#if canImport(Glibc)
import Glibc
#endif

/// An OCI platform: "linux/amd64", "linux/arm64/v8".
public struct Platform: Sendable, Hashable, Codable, CustomStringConvertible {
    public var os: String
    public var architecture: String
    public var variant: String?

    public init(os: String = "linux", architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
    }

    /// The node's platform, from `uname -m` mapped to Go/OCI names (x86_64 → amd64, aarch64 → arm64/v8).
    public static var host: Platform {
        var u = utsname()
        uname(&u)
        let machine = withUnsafeBytes(of: &u.machine) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        return fromMachine(machine)
    }

    /// Maps a `uname -m` string to a platform.
    public static func fromMachine(_ machine: String) -> Platform {
        switch machine {
        case "x86_64", "amd64": return Platform(architecture: "amd64")
        case "aarch64", "arm64": return Platform(architecture: "arm64", variant: "v8")
        case "armv7l", "armv7": return Platform(architecture: "arm", variant: "v7")
        case "armv6l": return Platform(architecture: "arm", variant: "v6")
        case "i386", "i686": return Platform(architecture: "386")
        default: return Platform(architecture: machine)
        }
    }

    /// True when an image for `other` runs here: same os and architecture, and a compatible variant
    /// (arm64 images without a variant are v8).
    public func accepts(_ other: Platform) -> Bool {
        guard os == other.os, architecture == other.architecture else { return false }
        guard let want = variant, let have = other.variant else { return true }
        if architecture == "arm", let w = Int(want.dropFirst()), let h = Int(have.dropFirst()) { return h <= w }
        return want == have
    }

    public var description: String {
        variant.map { "\(os)/\(architecture)/\($0)" } ?? "\(os)/\(architecture)"
    }
}
