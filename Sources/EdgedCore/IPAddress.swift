// IP address literals, for certificate SANs and TLS server names.

import Glibc

public enum IPAddress {
    /// The 4 or 16 network-order bytes of an IPv4 or IPv6 address literal; nil for anything else (a DNS name).
    public static func bytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces, tabs and newlines (FoundationEssentials has no trimmingCharacters).
    public var trimmed: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        return String(String(self).drop(while: isSpace).reversed().drop(while: isSpace).reversed())
    }
}
