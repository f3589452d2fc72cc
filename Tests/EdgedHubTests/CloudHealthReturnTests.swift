// The return turn (CloudHealth): after an outage each node's reconnect waits a random part of one health-check
// interval, so that a fleet whose API server restarted does not re-watch and re-write in the same second
// (edged-bench fleet, issue [5]); the first contact at start is not delayed.

@testable import EdgedHub
import Testing

@Suite struct CloudHealthReturnTests {
    /// One probe decides from unknown; one failure / one success decide afterwards.
    static func health(spread: Duration?) -> CloudHealth {
        CloudHealth(config: CloudHealthConfig(interval: .seconds(10), timeout: .seconds(1), failureThreshold: 1,
                                              successThreshold: 1, returnSpread: spread))
    }

    @Test func theFirstContactIsNotDelayed() {
        let h = Self.health(spread: .seconds(5))
        h.record(success: true)
        #expect(h.current == .online)
        #expect(h.returnTurn == nil)
        #expect(h.isPastReturnTurn)
    }

    @Test func returnTurnsAfterAnOutageAreSpreadOverTheInterval() {
        var delays: [Double] = []
        for _ in 0..<200 {
            let h = Self.health(spread: nil)   // one interval: 10 s
            h.record(success: true)
            h.record(success: false)
            #expect(h.current == .offline)
            #expect(!h.isPastReturnTurn)
            let back = ContinuousClock.now
            h.record(success: true)
            #expect(h.current == .online)
            let turn = try? #require(h.returnTurn)
            guard let turn else { return }
            let d = turn - back
            delays.append(Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
        }
        // Uniform over [0, 10 s): 200 draws all within it, and far apart (a fleet does not come back in one second).
        #expect(delays.allSatisfy { $0 >= 0 && $0 < 10.1 }, "\(delays)")
        #expect((delays.max() ?? 0) - (delays.min() ?? 0) > 5, "\(delays.sorted())")
        #expect(delays.filter { $0 < 1 }.count < 60, "\(delays.sorted())")
    }

    @Test func waitForReturnTurnWaitsForTheTurnAndAnotherOutageDrawsAgain() async throws {
        let h = Self.health(spread: .milliseconds(400))
        h.record(success: true)
        h.record(success: false)
        h.record(success: true)
        let turn = try #require(h.returnTurn)
        await h.waitForReturnTurn()
        #expect(ContinuousClock.now >= turn)
        #expect(h.isPastReturnTurn)
        // Offline again: not past the turn until back, and back means a new turn.
        h.record(success: false)
        #expect(!h.isPastReturnTurn)
        let waiter = Task { await h.waitForReturnTurn(); return ContinuousClock.now }
        try await Task.sleep(for: .milliseconds(100))
        h.record(success: true)
        let second = try #require(h.returnTurn)
        #expect(second != turn)
        let done = await waiter.value
        #expect(done >= second)
    }

    @Test func noSpreadMeansAtOnce() async {
        let h = Self.health(spread: .zero)
        h.record(success: true)
        h.record(success: false)
        h.record(success: true)
        #expect(h.isPastReturnTurn)
        await h.waitForReturnTurn()
    }
}
