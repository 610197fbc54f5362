// Package flagenv lets every flag of a flag.FlagSet also be set from an
// environment variable, with the command line winning.
package flagenv

import (
	"flag"
	"fmt"
	"strings"
)

// Parse parses args into fs, refuses positional arguments, and then sets each
// flag named in envFor that was not given on the command line from its
// environment variable (read with getenv), when that is non-empty.
func Parse(fs *flag.FlagSet, args []string, envFor map[string]string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, env := range envFor {
		if v := getenv(env); v != "" && !set[name] {
			if err := fs.Set(name, v); err != nil {
				return fmt.Errorf("%s: %w", env, err)
			}
		}
	}
	return nil
}
