// The on-disk state of containers: `<stateDir>/<id>/{spec.json,config,state,exit}`; what survives edged.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import EdgedCore

/// What `state` (written by the monitor once the container process runs) holds.
struct MonitorState: Equatable {
    var monitorPid: Int32
    var containerPid: Int32
    var startedAt: Timestamp
    var containerStartTicks: UInt64?
    var monitorStartTicks: UInt64?
}

/// What `exit` (written by the monitor when the container ended or failed to start) holds.
struct ExitRecord: Equatable {
    var exitCode: Int32
    var signal: Int32?
    var finishedAt: Timestamp
    var message: String?
    /// The monitor saw an OOM kill in the container's cgroup when it reaped it (`oomKilled=1`).
    var oomKilled: Bool = false
}

/// Reads and writes one container's state directory.
struct ContainerStore {
    let dir: String

    var specPath: String { "\(dir)/spec.json" }
    var configPath: String { "\(dir)/config" }
    var statePath: String { "\(dir)/state" }
    var exitPath: String { "\(dir)/exit" }

    func writeSpec(_ spec: ContainerSpec) throws {
        let data = try JSONEncoder().encode(spec)
        try FileIO.writeAtomic(specPath, Array(data))
    }

    func readSpec() -> ContainerSpec? {
        guard let bytes = FileIO.read(specPath) else { return nil }
        return try? JSONDecoder().decode(ContainerSpec.self, from: Data(bytes))
    }

    func readState() -> MonitorState? {
        guard let text = FileIO.readString(statePath) else { return nil }
        let kv = FileIO.keyValues(text)
        guard let m = kv["monitorPid"].flatMap({ Int32($0) }), let c = kv["containerPid"].flatMap({ Int32($0) }),
              let s = kv["startedAt"].flatMap({ Int64($0) }) else { return nil }
        return MonitorState(monitorPid: m, containerPid: c, startedAt: Timestamp(nanoseconds: s),
                            containerStartTicks: kv["containerStartTicks"].flatMap { UInt64($0) },
                            monitorStartTicks: kv["monitorStartTicks"].flatMap { UInt64($0) })
    }

    func readExit() -> ExitRecord? {
        guard let text = FileIO.readString(exitPath) else { return nil }
        let kv = FileIO.keyValues(text)
        guard let code = kv["exitCode"].flatMap({ Int32($0) }) else { return nil }
        let sig = kv["signal"].flatMap { Int32($0) } ?? 0
        let msg = kv["message"] ?? ""
        return ExitRecord(exitCode: code, signal: sig == 0 ? nil : sig,
                          finishedAt: Timestamp(nanoseconds: kv["finishedAt"].flatMap { Int64($0) } ?? 0),
                          message: msg.isEmpty ? nil : msg, oomKilled: kv["oomKilled"] == "1")
    }

    /// Records an exit edged determined itself (the monitor vanished), in the monitor's format.
    func writeExit(_ e: ExitRecord) throws {
        let msg = String((e.message ?? "").map { $0 == "\n" ? " " : $0 })
        try FileIO.writeAtomic(exitPath, "exitCode=\(e.exitCode)\nsignal=\(e.signal ?? 0)\nfinishedAt=\(e.finishedAt.nanoseconds)\n"
                                    + (e.oomKilled ? "oomKilled=1\n" : "") + "message=\(msg)\n")
    }
}
