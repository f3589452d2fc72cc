// Leader election on a Lease (client-go's semantics) and what it means for the controller: only the leader writes,
// a released Lease is taken over at once, a vanished leader's after the lease duration, and a leader that cannot
// renew, or sees another holder, stops at once.

@testable import EdgedAutonomy
import EdgedCore
import EdgedKube
import EdgedTestSupport
import Foundation
import Synchronization
import Testing

private let leasePath = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/edged-autonomy-controller"

private func election(_ identity: String, lease: Duration = .seconds(2), renew: Duration = .seconds(1),
                      retry: Duration = .milliseconds(100), release: Bool = true) -> LeaderElectionConfig {
    LeaderElectionConfig(namespace: "kube-system", name: "edged-autonomy-controller", identity: identity,
                         leaseDuration: lease, renewDeadline: renew, retryPeriod: retry, releaseOnCancel: release)
}

private func leaseSpec(_ f: AutonomyFixture) -> [String: Any] {
    (f.api.objectJSON(leasePath)?["spec"] as? [String: Any]) ?? [:]
}

private func holder(_ f: AutonomyFixture) -> String? { leaseSpec(f)["holderIdentity"] as? String }

@Suite(.serialized) struct LeaderElectionTests {
    @Test func theLeaseRecordIsClientGos() async throws {
        let f = try await AutonomyFixture.start()
        defer { Task { await f.close() } }
        let elector = LeaderElector(client: try f.client(user: "a"), config: election("a", lease: .seconds(3)), logger: LogCapture().logger("a"))
        let leading = Mutex(0)
        let task = Task { await elector.run { leading.withLock { $0 += 1 }; try? await Task.sleep(for: .seconds(60)) } }
        try await eventually("a leads") { leading.withLock { $0 } == 1 }
        let first = leaseSpec(f)
        #expect(first["holderIdentity"] as? String == "a" && first["leaseDurationSeconds"] as? Int == 3)
        #expect(first["leaseTransitions"] as? Int == 0)
        let acquire = try #require(first["acquireTime"] as? String)
        #expect(acquire.count == 27 && acquire.hasSuffix("Z"), "MicroTime: \(acquire)")   // 2026-01-02T15:04:05.123456Z
        try await eventually("a renewal") { leaseSpec(f)["renewTime"] as? String != first["renewTime"] as? String }
        #expect(leaseSpec(f)["acquireTime"] as? String == acquire, "a renewal keeps acquireTime")
        #expect(elector.isLeader)
        task.cancel()
        await task.value
        let released = leaseSpec(f)
        #expect(released["holderIdentity"] as? String == "" && released["leaseDurationSeconds"] as? Int == 1)
        #expect(released["leaseTransitions"] as? Int == 0)
        #expect(!elector.isLeader)
        // Fields the elector does not own are written back as they were.
        let annotate = try JSONSerialization.data(withJSONObject: ["metadata": ["annotations": ["keep": "me"]]])
        #expect(f.api.call("PATCH", leasePath, body: annotate, contentType: "application/merge-patch+json").code == 200)
        let b = LeaderElector(client: try f.client(user: "b"), config: election("b"), logger: LogCapture().logger("b"))
        let task2 = Task { await b.run { try? await Task.sleep(for: .seconds(60)) } }
        try await eventually("b leads") { b.isLeader }
        #expect(leaseSpec(f)["leaseTransitions"] as? Int == 1 && holder(f) == "b")
        #expect(path(f.api.objectJSON(leasePath), "metadata", "annotations", "keep") as? String == "me")
        task2.cancel()
        await task2.value
    }

    @Test func onlyTheLeaderWritesAndAReleasedLeaseIsTakenOverAtOnce() async throws {
        let f = try await AutonomyFixture.start()
        defer { Task { await f.close() } }
        try f.node("edge-1", annotations: [NodeAutonomy.durationAnnotation: "0"])
        try f.pod("p1", node: "edge-1")
        // A long lease: a takeover within it can only come from the release.
        let a = RunningController(try f.client(user: "a"), testOptions("a", election: election("a", lease: .seconds(20), renew: .seconds(2))))
        try await eventually("a leads") { a.controller.isLeading }
        let b = RunningController(try f.client(user: "b"), testOptions("b", election: election("b", lease: .seconds(20), renew: .seconds(2))))
        defer { Task { await b.stop() } }
        try await eventually("p1 reconciled") { f.seconds("p1", "unreachable") == "forever" }
        try await a.waitIdle()   // its Event follows the patch
        try await eventually("b has seen the lease") { b.controller.elector?.observedLeader == "a" }
        #expect(!b.controller.isLeading && holder(f) == "a")
        #expect(f.requests(by: "b", "PATCH", "/pods/").isEmpty && f.requests(by: "b", "POST", "/events").isEmpty)
        #expect(f.requests(by: "a", "PATCH", "/pods/").count == 1 && f.requests(by: "a", "POST", "/events").count == 1)
        #expect(a.logs.contains("info: became leader: lease kube-system/edged-autonomy-controller is held by a"))
        #expect(b.logs.contains("info: new leader: a holds lease kube-system/edged-autonomy-controller"))

        let stopped = ContinuousClock.now
        await a.stop()
        #expect(a.logs.contains("info: released leader lease kube-system/edged-autonomy-controller"))
        try await eventually("b leads", timeout: 5) { b.controller.isLeading }
        let takeover = ContinuousClock.now - stopped
        #expect(takeover < .seconds(3), "took \(takeover) with a 20 s lease: the release did not work")
        #expect(holder(f) == "b" && leaseSpec(f)["leaseTransitions"] as? Int == 1)
        try f.pod("p2", node: "edge-1")
        try await eventually("p2 reconciled by b") { f.seconds("p2", "unreachable") == "forever" }
        try await b.waitIdle()   // its Event follows the patch (under load the check came between them)
        #expect(f.requests(by: "b", "PATCH", "/pods/").count == 1)
        #expect(f.requests(by: "a", "PATCH", "/pods/").count == 1)
        let e = try #require(f.events(about: "p2", reason: "AutonomyTolerationsSet").first)
        #expect(e["reportingInstance"] as? String == "b")
    }

    @Test func aLeaderThatVanishesIsReplacedAfterTheLeaseDuration() async throws {
        let f = try await AutonomyFixture.start()
        defer { Task { await f.close() } }
        let a = RunningController(try f.client(user: "a"), testOptions("a", election: election("a", lease: .seconds(2), release: false)))
        try await eventually("a leads") { a.controller.isLeading }
        let b = RunningController(try f.client(user: "b"), testOptions("b", election: election("b", lease: .seconds(2))))
        defer { Task { await b.stop() } }
        try await eventually("b has seen a's renewals") { b.controller.elector?.observedLeader == "a" }
        try await Task.sleep(for: .milliseconds(300))
        let gone = ContinuousClock.now
        await a.stop()   // like a crash: no release
        #expect(holder(f) == "a")
        try await eventually("b leads", timeout: 8) { b.controller.isLeading }
        let takeover = ContinuousClock.now - gone
        // b counts 2 s from the last change it saw (at most one retry period before the crash).
        #expect(takeover >= .milliseconds(1700) && takeover < .seconds(4), "took \(takeover)")
        #expect(holder(f) == "b" && leaseSpec(f)["leaseTransitions"] as? Int == 1)
    }

    @Test func anotherHolderInTheLeaseStopsTheLeaderAtOnce() async throws {
        let f = try await AutonomyFixture.start()
        defer { Task { await f.close() } }
        try f.node("edge-1", annotations: [NodeAutonomy.durationAnnotation: "0"])
        let a = RunningController(try f.client(user: "a"), testOptions("a", election: election("a", lease: .seconds(2), renew: .seconds(1))))
        defer { Task { await a.stop() } }
        try await eventually("a leads") { a.controller.isLeading }
        // Someone else takes the Lease (another controller with a clock far ahead, an operator).
        let micro = KubeTime.micro(.now())
        let steal = try JSONSerialization.data(withJSONObject: ["spec": ["holderIdentity": "intruder", "renewTime": micro,
                                                                         "acquireTime": micro, "leaseDurationSeconds": 2]])
        let stolen = ContinuousClock.now
        #expect(f.api.call("PATCH", leasePath, body: steal, contentType: "application/merge-patch+json").code == 200)
        try await eventually("a stops leading", timeout: 3) { !a.controller.isLeading }
        #expect(ContinuousClock.now - stolen < .milliseconds(800), "the leader went on after seeing another holder")
        #expect(a.logs.contains("warning: stopped leading: lease kube-system/edged-autonomy-controller is now held by intruder"))
        // Nothing is written while the intruder holds it.
        try f.pod("p", node: "edge-1")
        try await Task.sleep(for: .milliseconds(500))
        #expect(f.seconds("p", "unreachable") == "300")
        // The intruder never renews: after 2 s of no change a takes it back and reconciles.
        try await eventually("a leads again", timeout: 6) { a.controller.isLeading }
        try await eventually("p reconciled") { f.seconds("p", "unreachable") == "forever" }
        #expect(leaseSpec(f)["leaseTransitions"] as? Int == 1 && holder(f) == "a")
    }

    @Test func aLeaderThatCannotRenewWithinTheDeadlineStops() async throws {
        let f = try await AutonomyFixture.start()
        defer { Task { await f.close() } }
        let a = RunningController(try f.client(user: "a"), testOptions("a", election: election("a", lease: .seconds(3), renew: .seconds(1))))
        defer { Task { await a.stop() } }
        try await eventually("a leads") { a.controller.isLeading }
        f.api.setBlackhole(true)     // requests hang: only the deadline ends them
        let cut = ContinuousClock.now
        try await eventually("a stops leading", timeout: 4) { !a.controller.isLeading }
        let after = ContinuousClock.now - cut
        #expect(after >= .milliseconds(900) && after < .milliseconds(2500), "stopped after \(after) (retry 100 ms + deadline 1 s)")
        #expect(a.logs.contains("not renewed within the renew deadline"))
        f.api.setBlackhole(false)
        try await eventually("a leads again", timeout: 8) { a.controller.isLeading }
    }

    @Test func badTimingsAreRefused() {
        #expect(throws: LeaderElectionError.self) { try election("a", lease: .seconds(2), renew: .seconds(2)).validate() }
        #expect(throws: LeaderElectionError.self) { try election("a", lease: .seconds(3), renew: .seconds(1), retry: .seconds(1)).validate() }
        #expect(throws: LeaderElectionError.self) { try election("a", lease: .milliseconds(900), renew: .milliseconds(500)).validate() }
        #expect(throws: LeaderElectionError.self) { try election("", lease: .seconds(3)).validate() }
        #expect(throws: Never.self) { try election("a", lease: .seconds(15), renew: .seconds(10), retry: .seconds(2)).validate() }
        #expect(throws: Never.self) { try election("a", lease: .seconds(3), renew: .seconds(2), retry: .milliseconds(500)).validate() }
    }
}
