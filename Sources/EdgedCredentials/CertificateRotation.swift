// When to renew a certificate, and the clock check that explains "certificate not yet valid" failures.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import EdgedCore

/// Rotation timing like kubelet's certificate manager (k8s.io/client-go/util/certificate).
///
/// A certificate is renewed at a jittered point between 70 % and 90 % of its lifetime, so that a fleet of
/// nodes whose certificates were issued together does not hit the API server at once, and so that there is
/// a long margin (at least 10 % of the lifetime) for retries while the node is offline.
public enum CertificateRotation {
    /// The lowest and highest fraction of the lifetime at which rotation is due.
    public static let jitterRange: ClosedRange<Double> = 0.7...0.9

    /// notBefore + lifetime × (0.7 + 0.2 × `random`), with `random` in [0, 1] (clamped).
    public static func rotationDeadline(notBefore: Date, notAfter: Date, random: Double) -> Date {
        let r = min(max(random, 0), 1)
        let fraction = jitterRange.lowerBound + (jitterRange.upperBound - jitterRange.lowerBound) * r
        let lifetime = notAfter.timeIntervalSince(notBefore)
        return notBefore.addingTimeInterval(lifetime * fraction)
    }

    /// The deadline with a fresh uniform random fraction.
    public static func rotationDeadline(notBefore: Date, notAfter: Date) -> Date {
        rotationDeadline(notBefore: notBefore, notAfter: notAfter, random: Double.random(in: 0...1))
    }

    /// Throws `clockSkew` when a certificate the API server just issued is not valid yet by the local clock by
    /// more than `tolerance` seconds: the device's clock is behind (a gateway without RTC after a power cut),
    /// and TLS with that certificate would fail with a confusing "not yet valid" error.
    public static func checkClock(notBefore: Date, now: Date = Date(), tolerance: TimeInterval = 5 * 60) throws(CredentialError) {
        guard notBefore.timeIntervalSince(now) > tolerance else { return }
        throw CredentialError(.clockSkew, "the system clock (\(rfc3339(now))) is behind the API server's (certificate valid from \(rfc3339(notBefore))): fix the time (NTP) and retry")
    }

    static func rfc3339(_ date: Date) -> String {
        Timestamp(nanoseconds: Int64(date.timeIntervalSince1970 * 1e9)).rfc3339
    }
}

extension CertificateInfo {
    /// The leaf's rotation deadline (see `CertificateRotation.rotationDeadline`).
    public func rotationDeadline(random: Double = Double.random(in: 0...1)) -> Date {
        CertificateRotation.rotationDeadline(notBefore: notBefore, notAfter: notAfter, random: random)
    }
}
