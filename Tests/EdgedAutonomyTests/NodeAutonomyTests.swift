// NodeAutonomy (EdgedCore) as the controller uses it: which annotation values make a node autonomous and for how
// long, and what a pod's tolerations become; TolerationChange, which writes the result back keeping every
// toleration as read; the work queue's client-go semantics.

@testable import EdgedAutonomy
import EdgedCore
import EdgedKube
import Testing

private let duration = NodeAutonomy.durationAnnotation
private let legacy = NodeAutonomy.legacyAnnotation

@Suite struct NodeAutonomyParsingTests {
    @Test(arguments: [
        ("0", NodeAutonomy.forever), ("72h", .seconds(259_200)), ("90m", .seconds(5400)), ("1h30m", .seconds(5400)),
        ("3600s", .seconds(3600)), ("1.5h", .seconds(5400)), (" 45s ", .seconds(45)), ("500ms", .seconds(1)),
        ("1ns", .seconds(1)), ("+2m", .seconds(120)), ("1m0.5s", .seconds(61)), (".5m", .seconds(30)),
        ("10µs", .seconds(1)), ("2h45m30s", .seconds(9930)),
    ])
    func validDurations(value: String, expected: NodeAutonomy) throws {
        #expect(try NodeAutonomy(annotations: [duration: value]) == expected)
    }

    @Test(arguments: [
        ("", "not a duration"), ("banana", "not a duration"), ("72", "not a duration"), ("3d", "not a duration"),
        ("h", "not a duration"), ("1..5h", "not a duration"), ("-5m", "cannot be negative"), ("1h-5m", "not a duration"),
        ("99999999999999999h", "too long"), ("0s0", "not a duration"), ("true", "not a duration"),
    ])
    func invalidDurations(value: String, reason: String) {
        do {
            _ = try NodeAutonomy(annotations: [duration: value])
            Issue.record("\(value) was accepted")
        } catch {
            #expect(error.annotation == duration && error.value == value)
            #expect(error.reason.contains(reason), "\(error.reason)")
            #expect(error.description.contains("write \"0\" for forever or a duration such as \"72h\""))
            #expect(error.description.hasPrefix("\(duration)=\"\(value)\" is not valid"))
        }
    }

    @Test func theOlderAnnotationAndPrecedence() throws {
        #expect(try NodeAutonomy(annotations: [legacy: "true"]) == .forever)
        #expect(try NodeAutonomy(annotations: [legacy: "TRUE"]) == .forever)
        #expect(try NodeAutonomy(annotations: [legacy: "false"]) == .off)
        #expect(throws: NodeAutonomy.InvalidAnnotation.self) { try NodeAutonomy(annotations: [legacy: "yes"]) }
        // autonomy-duration wins, both ways, and a bad legacy value does not matter when it is set.
        #expect(try NodeAutonomy(annotations: [legacy: "false", duration: "72h"]) == .seconds(259_200))
        #expect(try NodeAutonomy(annotations: [legacy: "true", duration: "0"]) == .forever)
        #expect(try NodeAutonomy(annotations: [legacy: "yes", duration: "1h"]) == .seconds(3600))
        // But a bad autonomy-duration is not rescued by a good legacy value.
        #expect(throws: NodeAutonomy.InvalidAnnotation.self) { try NodeAutonomy(annotations: [legacy: "true", duration: "x"]) }
        #expect(try NodeAutonomy(annotations: nil) == .off)
        #expect(try NodeAutonomy(annotations: ["other": "0"]) == .off)
        #expect(NodeAutonomy.off.isAutonomous == false && NodeAutonomy.forever.isAutonomous && NodeAutonomy.seconds(5).isAutonomous)
    }

    @Test func goDurationsForFlags() {
        #expect(NodeAutonomy.parseGoDuration("3s") == 3)
        #expect(NodeAutonomy.parseGoDuration("500ms") == 0.5)
        #expect(NodeAutonomy.parseGoDuration("1m30s") == 90)
        #expect(NodeAutonomy.parseGoDuration("15") == nil)
        #expect(NodeAutonomy.parseGoDuration("") == nil)
    }
}

/// A toleration: key, tolerationSeconds (nil: none), operator, value, effect.
private func t(_ key: String?, _ seconds: Int64? = nil, op: String? = "Exists", value: String? = nil,
               effect: String? = "NoExecute") -> Toleration {
    Toleration(key: key, operator: op, value: value, effect: effect, tolerationSeconds: seconds)
}

private let unreachable = "node.kubernetes.io/unreachable"
private let notReady = "node.kubernetes.io/not-ready"

@Suite struct TolerationsAppliedTests {
    @Test func theDefault300SecondOnesChangeInPlace() {
        let defaults = [t(notReady, 300), t(unreachable, 300)]
        #expect(NodeAutonomy.forever.tolerationsApplied(to: defaults) == [t(notReady), t(unreachable)])
        #expect(NodeAutonomy.seconds(259_200).tolerationsApplied(to: defaults) == [t(notReady, 259_200), t(unreachable, 259_200)])
        // Shorter than the default is applied too: the node's setting is what counts.
        #expect(NodeAutonomy.seconds(60).tolerationsApplied(to: defaults) == [t(notReady, 60), t(unreachable, 60)])
    }

    @Test func missingOnesAreAppendedAndNothingElseChanges() {
        let other = t("example.com/flaky", op: "Equal", value: "yes", effect: "NoSchedule")
        #expect(NodeAutonomy.seconds(60).tolerationsApplied(to: [other]) == [other, t(unreachable, 60), t(notReady, 60)])
        // One present, one missing.
        #expect(NodeAutonomy.forever.tolerationsApplied(to: [t(unreachable, 300), other]) == [t(unreachable), other, t(notReady)])
        #expect(NodeAutonomy.forever.tolerationsApplied(to: []) == [t(unreachable), t(notReady)])
    }

    @Test func equalWithAnEmptyValueCountsAndIsKeptAsItIs() {
        let eq = t(unreachable, 300, op: "Equal", value: "")
        let applied = NodeAutonomy.seconds(7200).tolerationsApplied(to: [eq, t(notReady, 300, op: "Equal")])
        #expect(applied == [t(unreachable, 7200, op: "Equal", value: ""), t(notReady, 7200, op: "Equal")])
        // A missing operator means Equal.
        #expect(NodeAutonomy.forever.tolerationsApplied(to: [t(unreachable, 300, op: nil), t(notReady)]) == [t(unreachable, op: nil), t(notReady)])
        // Equal with a value does not match the valueless taint: the controller adds its own beside it.
        let valued = t(unreachable, 300, op: "Equal", value: "x")
        #expect(NodeAutonomy.forever.tolerationsApplied(to: [valued]) == [valued, t(unreachable), t(notReady)])
    }

    @Test func wildcardsAndOtherEffectsAreLeftAlone() {
        // A toleration without a key (tolerates every taint) or without an effect, or for NoSchedule, is not one of
        // the two: untouched, and the two are still added.
        let wildcard = t(nil, effect: nil)
        let anyEffect = t(unreachable, effect: nil)
        let noSchedule = t(unreachable, effect: "NoSchedule")
        let applied = NodeAutonomy.forever.tolerationsApplied(to: [wildcard, anyEffect, noSchedule])
        #expect(applied == [wildcard, anyEffect, noSchedule, t(unreachable), t(notReady)])
    }

    @Test func anEarlierTolerationThatWouldDeleteThePodSoonerIsOvertaken() {
        // The taint-eviction controller goes by the first matching toleration: a wildcard NoExecute toleration of
        // 300 s before the autonomy ones would still delete the pod after 300 s, so they move in front of it.
        let wildcard300 = t(nil, 300)
        #expect(NodeAutonomy.forever.tolerationsApplied(to: [wildcard300, t(notReady, 300), t(unreachable, 300)])
                == [t(unreachable), t(notReady), wildcard300])
        #expect(NodeAutonomy.seconds(600).tolerationsApplied(to: [wildcard300]) == [t(unreachable, 600), t(notReady, 600), wildcard300])
        #expect(NodeAutonomy.deletionDelay([t(unreachable), t(notReady), wildcard300], taintKey: unreachable) == nil)
        // One that keeps the pod longer than the node's duration stays first.
        let wildcard1d = t(nil, 86_400)
        #expect(NodeAutonomy.seconds(600).tolerationsApplied(to: [wildcard1d]) == [wildcard1d, t(unreachable, 600), t(notReady, 600)])
        // Already in front: nothing to do.
        #expect(NodeAutonomy.forever.tolerationsApplied(to: [t(notReady), t(unreachable), wildcard300]) == nil)
    }

    @Test func alreadyRightIsNil() {
        #expect(NodeAutonomy.forever.tolerationsApplied(to: [t(unreachable), t(notReady)]) == nil)
        #expect(NodeAutonomy.seconds(60).tolerationsApplied(to: [t(notReady, 60), t(unreachable, 60)]) == nil)
        #expect(NodeAutonomy.off.tolerationsApplied(to: [t(unreachable, 300)]) == nil)
        // Two matching tolerations of one taint both get the duration.
        let twice = NodeAutonomy.forever.tolerationsApplied(to: [t(unreachable, 300), t(unreachable, 30, op: "Equal"), t(notReady)])
        #expect(twice == [t(unreachable), t(unreachable, op: "Equal"), t(notReady)])
    }

    @Test func leavesAlone() {
        var meta = ObjectMeta(name: "p")
        #expect(!NodeAutonomy.leavesAlone(meta, phase: "Running"))
        #expect(!NodeAutonomy.leavesAlone(meta, phase: nil))
        #expect(NodeAutonomy.leavesAlone(meta, phase: "Succeeded") && NodeAutonomy.leavesAlone(meta, phase: "Failed"))
        meta.ownerReferences = [OwnerReference(apiVersion: "apps/v1", kind: "DaemonSet", name: "d", uid: "u", controller: true)]
        #expect(NodeAutonomy.leavesAlone(meta, phase: "Running"))
        meta.ownerReferences = [OwnerReference(apiVersion: "apps/v1", kind: "DaemonSet", name: "d", uid: "u", controller: false)]
        #expect(!NodeAutonomy.leavesAlone(meta, phase: "Running"), "a DaemonSet that does not control the pod")
        meta.ownerReferences = [OwnerReference(apiVersion: "apps/v1", kind: "ReplicaSet", name: "r", uid: "u", controller: true)]
        #expect(!NodeAutonomy.leavesAlone(meta, phase: "Running"))
        meta.annotations = ["kubernetes.io/config.mirror": "abc"]
        #expect(NodeAutonomy.leavesAlone(meta, phase: "Running"))
        meta.annotations = nil
        meta.deletionTimestamp = "2026-01-01T00:00:00Z"
        #expect(NodeAutonomy.leavesAlone(meta, phase: "Running"))
    }
}

@Suite struct TolerationChangeTests {
    private func parse(_ text: String) throws -> [JSONValue] {
        guard case .array(let items) = try JSONValue.parse(Array(text.utf8)) else { throw TimedOut(description: "not an array") }
        return items
    }

    @Test func everyTolerationGoesBackAsReadExceptTheSeconds() throws {
        // A field this edged does not know (a newer API) stays, key order stays, untouched entries are byte-identical.
        let raw = try parse("""
            [{"key":"example.com/gpu","operator":"Exists","effect":"NoSchedule","futureField":{"a":1}},
             {"operator":"Exists","key":"node.kubernetes.io/not-ready","effect":"NoExecute","tolerationSeconds":300,"futureField":"x"},
             {"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}]
            """)
        let change = try #require(TolerationChange.compute(tolerations: raw, autonomy: .forever))
        #expect(change.tolerations[0] == raw[0])
        #expect(change.tolerations[1].jsonText == #"{"operator":"Exists","key":"node.kubernetes.io/not-ready","effect":"NoExecute","futureField":"x"}"#)
        #expect(change.tolerations[2].jsonText == #"{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute"}"#)
        #expect(change.before == "unreachable 300 s, not-ready 300 s" && change.after == "unreachable forever, not-ready forever")

        let hours = try #require(TolerationChange.compute(tolerations: raw, autonomy: .seconds(259_200)))
        #expect(hours.tolerations[1].jsonText == #"{"operator":"Exists","key":"node.kubernetes.io/not-ready","effect":"NoExecute","tolerationSeconds":259200,"futureField":"x"}"#)
        #expect(TolerationChange.compute(tolerations: hours.tolerations, autonomy: .seconds(259_200)) == nil)
    }

    @Test func aMovedTolerationGoesBackAsReadAndTheOneItOvertakesIsUntouched() throws {
        // A wildcard NoExecute toleration of 300 s comes first: the autonomy ones move in front of it (the first match
        // decides), and every entry is still the one read, the wildcard byte-identical.
        let raw = try parse("""
            [{"operator":"Exists","effect":"NoExecute","tolerationSeconds":300,"futureField":1},
             {"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300},
             {"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300,"futureField":2}]
            """)
        let change = try #require(TolerationChange.compute(tolerations: raw, autonomy: .forever))
        #expect(change.tolerations.map(\.jsonText) == [
            #"{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","futureField":2}"#,
            #"{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute"}"#,
            raw[0].jsonText,
        ])
        let decoded = try change.tolerations.map { try JSONObject($0).decode(as: Toleration.self) }
        #expect(NodeAutonomy.deletionDelay(decoded, taintKey: unreachable) == nil)
        #expect(TolerationChange.compute(tolerations: change.tolerations, autonomy: .forever) == nil)
    }

    @Test func missingOnesAreAppended() throws {
        let change = try #require(TolerationChange.compute(tolerations: [], autonomy: .seconds(60)))
        let decoded = try change.tolerations.map { try JSONObject($0).decode(as: Toleration.self) }
        #expect(decoded == [t(unreachable, 60), t(notReady, 60)])
        #expect(change.before == "unreachable: none, not-ready: none")
    }

    @Test func aTolerationThatIsNotAnObjectStopsTheChange() throws {
        #expect(TolerationChange.compute(tolerations: try parse(#"["what"]"#), autonomy: .forever) == nil)
    }
}

@Suite struct WorkQueueTests {
    @Test func keysAreQueuedOnceAndAgainWhenAddedDuringProcessing() async {
        let q = WorkQueue()
        await q.add("a")
        await q.add("b")
        await q.add("a")
        #expect(await q.count == 2)
        let first = await q.get()
        #expect(first == "a")
        await q.add("a")                  // while "a" is processed: after it, not beside it
        #expect(await q.count == 1)
        #expect(await q.get() == "b")
        await q.done("a")
        #expect(await q.get() == "a")
        await q.done("a")
        await q.done("b")
        #expect(await q.isIdle)
    }

    @Test func retriesBackOffAndShutDownWakesWaiters() async throws {
        let q = WorkQueue(initialBackoff: .milliseconds(20), maxBackoff: .milliseconds(80))
        #expect(await q.retryLater("k") == .milliseconds(20))
        #expect(await q.retryLater("k") == .milliseconds(40))
        #expect(await q.retryLater("k") == .milliseconds(80))
        #expect(await q.retryLater("k") == .milliseconds(80))
        #expect(await !q.isIdle)
        #expect(await q.get() == "k")     // after the last delay
        await q.forget("k")
        await q.done("k")
        #expect(await q.retryLater("k") == .milliseconds(20))
        await q.shutDown()
        let waiter = Task { await q.get() }
        #expect(await waiter.value == nil)
        // A waiting worker whose task is cancelled gets nil.
        let q2 = WorkQueue()
        let cancelled = Task { await q2.get() }
        try await Task.sleep(for: .milliseconds(50))
        cancelled.cancel()
        #expect(await cancelled.value == nil)
    }
}
