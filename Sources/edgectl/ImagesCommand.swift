// `edgectl images …`: list, import, pull, remove and prune the node's images.

import ArgumentParser
import EdgedControl
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

struct ImagesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "images",
        abstract: "Manage the images on this node.",
        subcommands: [List.self, Import.self, Pull.self, Remove.self, Prune.self],
        defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List images (the default).",
                                                        aliases: ["ls"])
        @Flag(name: .long, help: "Print the images as JSON.")
        var json = false
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let images = try await global.client.images()
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                Output.out(String(decoding: try encoder.encode(images), as: UTF8.self) + "\n")
                return
            }
            if images.isEmpty {
                Output.out("No images. Import one with: edgectl images import FILE.tar\n")
                return
            }
            Output.out(ImagesCommand.table(images))
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Import image archives (OCI layout or archive, docker save tarball) from files on this machine.")
        @Argument(help: "Archive files.")
        var files: [String]
        @OptionGroup var global: GlobalOptions

        func validate() throws {
            if files.isEmpty { throw ValidationError("name at least one archive file") }
        }

        func run() async throws {
            var failed = 0
            for file in files {
                // edged resolves paths itself, so send an absolute one.
                let path = file.hasPrefix("/") ? file : ImagesCommand.currentDirectory() + "/" + file
                do {
                    let imported = try await global.client.importImage(path: path)
                    for image in imported {
                        Output.out("imported \(image.references.first ?? image.digest) (\(Output.bytes(image.size)))\n")
                    }
                } catch let error as ControlError {
                    Output.error("\(file): \(error.message)")
                    failed += 1
                }
            }
            if failed > 0 { throw ExitCode(1) }
        }
    }

    struct Pull: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "pull", abstract: "Pull an image from its registry.")
        @Argument(help: "The image reference, e.g. busybox:1.36.")
        var reference: String
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let image = try await global.client.pullImage(reference: reference)
            Output.out("pulled \(image.references.first ?? reference) \(image.digest) (\(Output.bytes(image.size)))\n")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove images no pod uses.",
                                                        aliases: ["remove"])
        @Argument(help: "Image references or digests.")
        var references: [String]
        @OptionGroup var global: GlobalOptions

        func validate() throws {
            if references.isEmpty { throw ValidationError("name at least one image") }
        }

        func run() async throws {
            var failed = 0
            for reference in references {
                do {
                    try await global.client.removeImage(reference: reference)
                    Output.out("removed \(reference)\n")
                } catch let error as ControlError {
                    Output.error(error.message)
                    failed += 1
                }
            }
            if failed > 0 { throw ExitCode(1) }
        }
    }

    struct Prune: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "prune", abstract: "Remove every image no pod uses.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let removed = try await global.client.pruneImages()
            if removed.isEmpty { Output.out("nothing to remove: every image is in use\n") }
            for r in removed { Output.out("removed \(r)\n") }
        }
    }

    static func table(_ images: [ImageInfo]) -> String {
        let rows = images.map { i -> [String] in
            let digest = i.digest.hasPrefix("sha256:") ? String(i.digest.dropFirst(7).prefix(12)) : i.digest
            return [i.references.first ?? "<none>", digest, Output.bytes(i.size), "\(i.os)/\(i.architecture)", i.inUse ? "yes" : "no"]
        }
        return Output.table(["IMAGE", "DIGEST", "SIZE", "PLATFORM", "IN USE"], rows)
    }

    static func currentDirectory() -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buf, buf.count) != nil else { return "." }
        return String(cString: buf)
    }
}
