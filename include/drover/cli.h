// What the three executables' main() functions share: exit codes, logging
// set-up, and applying a --config file under the command-line flags.
//
// Call from main() only, before any other thread starts.
#ifndef DROVER_CLI_H_
#define DROVER_CLI_H_

#include <CLI/CLI.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "drover/config.h"

namespace drover {

// Exit codes, for all three executables (see the spec).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;       // the job or operation failed
inline constexpr int kExitUsage = 2;        // usage or validation error
inline constexpr int kExitUnreachable = 3;  // scheduler unreachable/timed out
inline constexpr int kExitAuth = 4;         // authentication refused

// spdlog to stderr: one line per event with its level; colour only on a
// terminal. When stderr is systemd's journal ($JOURNAL_STREAM), lines carry
// a "<N>" priority prefix instead of a timestamp. `level` is trace, debug,
// info, warn or error; false if not.
bool SetUpLogging(const std::string& level, const std::string& name);

// Reads the file named by --config (if given) and sets every option that
// was not given on the command line from it. `keys` lists the config keys,
// which are the long flag names. Prints located errors to stderr and
// returns false when the file has any.
bool ApplyConfig(CLI::App& app, const std::string& path,
                 const std::vector<ConfigKey>& keys);

// Checks for option values, attached with CLI::Option::check() so that a
// bad value is refused the same way from a flag and (located) from the
// config file.
// A duration such as "1s" or "500ms" of at least `min`.
CLI::Validator DurationValidator(std::chrono::milliseconds min);
// trace, debug, info, warn or error.
CLI::Validator LogLevelValidator();
// A ZeroMQ endpoint this program can use: tcp://HOST:PORT or ipc://PATH.
CLI::Validator EndpointValidator();

// Whether traffic on `endpoint` stays on this host: ipc://, or tcp:// on a
// loopback address (127.0.0.0/8, ::1, localhost, the interface lo).
// "tcp://*:7700" and "tcp://0.0.0.0:7700" listen on every interface.
bool IsLocalEndpoint(std::string_view endpoint);

// Adds --key and --server-key (defaulting to $DROVER_KEY and
// $DROVER_SERVER_KEY), the key files of a client or a worker; `who` names
// the program in the help ("client", "worker").
void AddKeyOptions(CLI::App& app, const std::string& who, std::string* key,
                   std::string* server_key);

// Keeps secrets in this process's memory out of reach: no core dumps
// (RLIMIT_CORE 0, and not dumpable, which also keeps processes of the same
// user, such as shell tasks, from reading /proc/PID/environ or attaching
// a debugger). Call first thing in a daemon's main().
void ProtectProcessMemory();

// Parses argv; on --help/--version prints and returns 0, on a usage error
// prints it and returns kExitUsage; nullopt when the program should run.
std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv);

}  // namespace drover

#endif  // DROVER_CLI_H_
