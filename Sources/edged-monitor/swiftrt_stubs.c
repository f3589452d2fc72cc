// SwiftPM links every executable with swiftc, which adds swiftrt.o and with it references into the Swift
// runtime. The monitor is pure C; these two no-op definitions satisfy swiftrt.o so that no Swift runtime is
// linked (keeping the monitor static and a few hundred KB of RSS).
void swift_addNewDSOImage(const void *header) { (void)header; }
int _swift_backtrace_isThunkFunction(const char *name) { (void)name; return 0; }
