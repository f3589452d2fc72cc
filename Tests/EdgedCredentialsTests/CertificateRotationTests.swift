import EdgedCredentials
import Foundation
import Testing

@Suite struct CertificateRotationTests {
    let notBefore = Date(timeIntervalSince1970: 1_700_000_000)
    let notAfter = Date(timeIntervalSince1970: 1_700_000_000 + 365 * 86400)

    func fraction(_ d: Date) -> Double { d.timeIntervalSince(notBefore) / notAfter.timeIntervalSince(notBefore) }

    @Test func deadlineIsBetween70And90PercentOfTheLifetime() {
        #expect(abs(fraction(CertificateRotation.rotationDeadline(notBefore: notBefore, notAfter: notAfter, random: 0)) - 0.7) < 1e-9)
        #expect(abs(fraction(CertificateRotation.rotationDeadline(notBefore: notBefore, notAfter: notAfter, random: 1)) - 0.9) < 1e-9)
        #expect(abs(fraction(CertificateRotation.rotationDeadline(notBefore: notBefore, notAfter: notAfter, random: 0.5)) - 0.8) < 1e-9)
        #expect(abs(fraction(CertificateRotation.rotationDeadline(notBefore: notBefore, notAfter: notAfter, random: 7)) - 0.9) < 1e-9)
        var seen: Set<Int> = []
        for _ in 0..<1000 {
            let f = fraction(CertificateRotation.rotationDeadline(notBefore: notBefore, notAfter: notAfter))
            #expect(f >= 0.7 && f <= 0.9)
            seen.insert(Int(f * 100))
        }
        #expect(seen.count > 10, "jittered, not constant")
    }

    @Test func clockBehindTheServerIsExplained() throws {
        let now = Date(timeIntervalSince1970: 1_700_000_000)
        try CertificateRotation.checkClock(notBefore: now.addingTimeInterval(-3600), now: now)
        try CertificateRotation.checkClock(notBefore: now.addingTimeInterval(299), now: now)
        let error = #expect(throws: CredentialError.self) {
            try CertificateRotation.checkClock(notBefore: now.addingTimeInterval(3600), now: now)
        }
        #expect(error?.code == .clockSkew)
        #expect(error?.message == "the system clock (2023-11-14T22:13:20Z) is behind the API server's (certificate valid from 2023-11-14T23:13:20Z): fix the time (NTP) and retry")
        #expect(throws: CredentialError.self) {
            try CertificateRotation.checkClock(notBefore: now.addingTimeInterval(61), now: now, tolerance: 60)
        }
    }
}
