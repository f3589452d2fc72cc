// What `edgectl status` says about the kubelet API's serving certificate (KubeletAPIReport), and that the report
// travels between daemon and edgectl of different versions.

@testable import EdgedControl
import Foundation
import Testing

@Suite struct KubeletAPIReportTests {
    @Test func aSelfSignedCertificateNamesTheCSRToApprove() {
        let waiting = KubeletAPIReport(listening: "0.0.0.0:10250", servingCertificate: "self-signed", servingCSR: "node-csr-abc12")
        #expect(waiting.selfSigned)
        #expect(waiting.servingNote == "self-signed serving certificate: the kubelet-serving CSR node-csr-abc12 waits for approval — kubectl certificate approve node-csr-abc12")
        // Between two CSRs (one timed out, the next not made yet): no name to give.
        let between = KubeletAPIReport(listening: "0.0.0.0:10250", servingCertificate: "self-signed")
        #expect(between.servingNote == "self-signed serving certificate until a kubelet-serving CSR is approved (kubectl get csr)")
        // The issued certificate: nothing to say.
        #expect(KubeletAPIReport(listening: "0.0.0.0:10250", servingCertificate: "issued", servingCSR: "node-csr-abc12").servingNote == nil)
        #expect(KubeletAPIReport(problem: "port 10250 in use").servingNote == nil)
    }

    @Test func olderAndNewerDaemonsDecode() throws {
        let old = try JSONDecoder().decode(KubeletAPIReport.self, from: Data(#"{"listening":"0.0.0.0:10250"}"#.utf8))
        #expect(old.listening == "0.0.0.0:10250" && old.servingCertificate == nil && !old.selfSigned && old.servingNote == nil)
        let report = KubeletAPIReport(listening: "[::]:10250", servingCertificate: "self-signed", servingCSR: "node-csr-x")
        let json = String(decoding: try JSONEncoder().encode(report), as: UTF8.self)
        #expect(json.contains(#""servingCertificate":"self-signed""#) && json.contains(#""servingCSR":"node-csr-x""#), "\(json)")
        #expect(try JSONDecoder().decode(KubeletAPIReport.self, from: Data(json.utf8)) == report)
    }
}
