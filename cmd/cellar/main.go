// Command cellar is the cellar server and its command-line client.
//
//	cellar serve     run the HTTP API (the embedded SQLite datastore by default)
//	cellar init      create or migrate the datastore a config describes
//	cellar version   print the version, commit and node schema versions
//	cellar put|get|latest|row|batch-get|batch-put|scan|shards   talk to a server
//
// main only parses flags, reads config and wires packages together.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "serve":
		return runServe(ctx, rest, stderr)
	case "init":
		return runInit(ctx, rest, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, stdout, stderr)
	case "version", "-version", "--version":
		return runVersion(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	}
	if ok, code := runClientCommand(ctx, name, rest, stdin, stdout, stderr); ok {
		return code
	}
	fmt.Fprintf(stderr, "cellar: unknown command %q\n\n", name)
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: cellar COMMAND [flags] [args]

Server:
  serve        run the HTTP API (default: embedded SQLite in ./cellar-data on 127.0.0.1:7070)
  init         create or migrate the datastore described by --config
  bench        measure cellar over HTTP against the bare database driver
  version      print this binary's version, commit and node schema versions

Client (talks to --addr, default $CELLAR_ADDR or http://127.0.0.1:7070):
`)
	clientUsage(w)
	fmt.Fprintln(w, "\nRun `cellar COMMAND -h` for a command's flags.")
}
