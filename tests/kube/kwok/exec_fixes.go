//go:build !windows

// mcsd's fixes to exec in kwok v0.8.0. tests/kube/build.sh builds kwok from a copy of its module
// with this file in place of pkg/kwok/server/debugging_exec_other.go (the same package, the same
// function execInContainerWithTTY, and exitCodeOf), and the one line of debugging_exec.go that
// returns a command's result without a terminal passing it through exitCodeOf. Three faults,
// all seen when the MCS conformance suite and kubectl exec into pods:
//
//   - Without stdin (the suite's every exec: a terminal, no stdin, a 4 s deadline) the request
//     carries a nil reader, and the module copied from it into the terminal: the nil
//     dereference took the whole kwok down, and every pod of the node with it.
//   - With a terminal, the call returned as soon as the command exited, while the last of its
//     output could still sit in the terminal unread: a short command's answer was lost.
//   - A command that exited with a status was reported as an error of kwok's own wording, which
//     the streaming server does not read as an exit status: `kubectl exec` always exited 1.
//
// Here the input is copied only when there is one, the call returns once the output has been
// read to its end (or, if a process left in the background keeps the terminal open, after 2 s),
// and an exit status is reported as one.
package server

import (
	"context"
	"errors"
	"io"
	osexec "os/exec"
	"time"

	cpty "github.com/creack/pty"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"sigs.k8s.io/kwok/pkg/log"
	utilsexec "sigs.k8s.io/kwok/pkg/utils/exec"
)

// exitCodeOf gives a command's exit with a status as the error the streaming server reports as
// that status (it recognises k8s.io/utils/exec's ExitError only, and kwok's exec wraps
// os/exec's in words of its own); any other error is returned as it is.
func exitCodeOf(err error) error {
	var exited *osexec.ExitError
	if errors.As(err, &exited) && exited.Exited() {
		return utilexec.CodeExitError{Err: exited, Code: exited.ExitCode()}
	}
	return err
}

// How long to keep reading a terminal after its command exited, when something else still holds
// its other end.
const terminalDrainLimit = 2 * time.Second

func (s *Server) execInContainerWithTTY(ctx context.Context, cmd []string, in io.Reader, out io.WriteCloser, resize <-chan remotecommand.TerminalSize) error {
	logger := log.FromContext(ctx)

	control, terminal, err := cpty.Open()
	if err != nil {
		return err
	}
	defer func() { _ = control.Close() }()
	terminalOpen := true
	closeTerminal := func() {
		if terminalOpen {
			terminalOpen = false
			_ = terminal.Close()
		}
	}
	defer closeTerminal()

	var sink io.Writer = io.Discard
	if out != nil {
		sink = out
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		// Ends with an error (EIO) once every holder of the terminal's end has closed it and
		// everything written to it has been read.
		_, _ = io.Copy(sink, control)
	}()
	if in != nil {
		go func() { _, _ = io.Copy(control, in) }()
	}
	if resize != nil {
		go func() {
			for size := range resize {
				if err := cpty.Setsize(control, &cpty.Winsize{Rows: size.Height, Cols: size.Width}); err != nil {
					logger.Error("failed to resize pty", "err", err)
				}
			}
		}()
	}

	ctx = utilsexec.WithIOStreams(ctx, utilsexec.IOStreams{In: terminal, Out: terminal, ErrOut: terminal})
	err = utilsexec.Exec(ctx, cmd[0], cmd[1:]...)

	// The command has exited; this process's copy of the terminal's end is the last one unless
	// the command left something running in the background.
	closeTerminal()
	select {
	case <-drained:
	case <-time.After(terminalDrainLimit):
	case <-ctx.Done():
	}
	return exitCodeOf(err)
}
