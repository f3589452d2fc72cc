// `edgectl version`: edgectl's version, and edged's when it answers.

import ArgumentParser
import EdgedControl

struct VersionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print edgectl's and edged's versions.")
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        Output.out("edgectl \(edgectlVersion)\n")
        do {
            let status = try await global.client.status()
            Output.out("edged   \(status.version) (pid \(status.pid), \(status.mode))\n")
        } catch let error as ControlClientError {
            Output.out("edged   unknown: \(error.message)\n")
        }
    }
}
