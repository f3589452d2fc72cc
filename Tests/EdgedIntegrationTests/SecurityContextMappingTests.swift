// From a pod's securityContext (and edged's seccompDefault) to what the kernel enforces on the container's
// process, read from the host's /proc/<pid>/status: Seccomp (0 none, 2 filter) and NoNewPrivs. Kubelet's rules:
// the container's seccompProfile wins over the pod's, then seccompDefault decides (RuntimeDefault or Unconfined);
// privileged containers run unconfined; no_new_privs only for allowPrivilegeEscalation: false. A profile type
// edged does not support fails that pod alone, with a message naming it.

import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

@Suite(.serialized, .enabled(if: isRoot, "needs root: starts real containers"))
struct SecurityContextMappingTests {
    /// "Seccomp" and "NoNewPrivs" of the running main container of `pod`.
    func confinement(_ edged: EdgedInstance, _ pod: String) throws -> (seccomp: Int, noNewPrivs: Int) {
        let p = try edged.waitForPod(pod, "Running") {
            $0["phase"] as? String == "Running" && mainContainer($0)["state"] as? String == "running"
        }
        let pid = mainContainer(p)["pid"] as? Int ?? 0
        let status = (procText("/proc/\(pid)/status") ?? "")
        func field(_ name: String) -> Int {
            status.split(separator: "\n").first { $0.hasPrefix("\(name):") }
                .flatMap { Int($0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces)) } ?? -1
        }
        return (field("Seccomp"), field("NoNewPrivs"))
    }

    func start(_ name: String, seccompDefault: Bool) throws -> EdgedInstance {
        let edged = try EdgedInstance(name: name)
        try Demo.writeImageArchive(to: "\(edged.stateDir)/images/import/busybox.tar")
        try "seccompDefault: \(seccompDefault)\n".write(toFile: edged.root.sub("config.yaml"), atomically: true, encoding: .utf8)
        try edged.start()
        return edged
    }

    @Test func withSeccompDefaultTheContainerAndPodFieldsDecide() throws {
        let edged = try start("scmap", seccompDefault: true)
        defer { edged.cleanUp() }
        try edged.writeManifest("plain.yaml", busyboxPod("plain", command: "sleep 3600"))
        try edged.writeManifest("unconfined.yaml", busyboxPod("unconfined", command: "sleep 3600",
                                                               extra: "    securityContext: {seccompProfile: {type: Unconfined}}"))
        try edged.writeManifest("podlevel.yaml", busyboxPod("podlevel", command: "sleep 3600",
                                                             extra: "  securityContext: {seccompProfile: {type: Unconfined}}"))
        try edged.writeManifest("override.yaml", busyboxPod("override", command: "sleep 3600", extra: """
                securityContext: {seccompProfile: {type: RuntimeDefault}}
              securityContext: {seccompProfile: {type: Unconfined}}
            """))
        try edged.writeManifest("noescalate.yaml", busyboxPod("noescalate", command: "sleep 3600",
                                                               extra: "    securityContext: {allowPrivilegeEscalation: false}"))
        try edged.writeManifest("privileged.yaml", busyboxPod("privileged", command: "sleep 3600",
                                                               extra: "    securityContext: {privileged: true, seccompProfile: {type: RuntimeDefault}}"))
        try edged.writeManifest("localhost.yaml", busyboxPod("localhost", command: "sleep 3600",
                                                              extra: "    securityContext: {seccompProfile: {type: Localhost, localhostProfile: my.json}}"))

        #expect(try confinement(edged, "plain") == (2, 0), "seccompDefault: RuntimeDefault for a container without a profile")
        #expect(try confinement(edged, "unconfined") == (0, 0), "the container's Unconfined wins over seccompDefault")
        #expect(try confinement(edged, "podlevel") == (0, 0), "the pod's profile applies to a container without one")
        #expect(try confinement(edged, "override") == (2, 0), "the container's profile wins over the pod's")
        #expect(try confinement(edged, "noescalate") == (2, 1), "allowPrivilegeEscalation: false sets no_new_privs")
        #expect(try confinement(edged, "privileged") == (0, 0), "privileged containers run unconfined")

        // The unsupported profile fails its pod alone, saying what is wrong.
        let bad = try edged.waitForPod("localhost", "an error naming the profile type") {
            ((mainContainer($0)["message"] as? String) ?? ($0["message"] as? String) ?? "").contains("seccompProfile type Localhost is not supported")
                || "\($0)".contains("seccompProfile type Localhost is not supported")
        }
        #expect(mainContainer(bad)["state"] as? String != "running")
    }

    @Test func withoutSeccompDefaultContainersRunUnconfinedLikeKubelet() throws {
        let edged = try start("scmapoff", seccompDefault: false)
        defer { edged.cleanUp() }
        try edged.writeManifest("plain.yaml", busyboxPod("plain", command: "sleep 3600"))
        try edged.writeManifest("asked.yaml", busyboxPod("asked", command: "sleep 3600",
                                                          extra: "    securityContext: {seccompProfile: {type: RuntimeDefault}}"))
        #expect(try confinement(edged, "plain") == (0, 0))
        #expect(try confinement(edged, "asked") == (2, 0))
    }
}
