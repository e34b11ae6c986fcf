package main

import (
	"io"
	"log/slog"
)

// result is what a process-level subcommand (conns, broadcast) measured.
type result interface {
	print(w io.Writer)
	problems() int // what made a run unsound: its figures do not count
}

// finishRun ends a subcommand: it prints res (nil: nothing was measured),
// writes it as JSON to jsonPath if set, and returns the exit status — 1
// if the run failed, was not sound, or its JSON could not be written.
func finishRun[T any, R interface {
	*T
	result
}](log *slog.Logger, stdout io.Writer, name string, res R, jsonPath string, err error) int {
	if res != nil {
		res.print(stdout)
		if jsonPath != "" {
			if werr := writeJSONFile(jsonPath, res); werr != nil {
				log.Error("writing the JSON result", "err", werr)
				return 1
			}
		}
	}
	if err != nil {
		log.Error(name+" benchmark failed", "err", err)
		return 1
	}
	if n := res.problems(); n > 0 {
		log.Error("a run was not sound: its figures do not count", "problems", n)
		return 1
	}
	return 0
}
