// compose-config loads compose files with compose-go, the loader of Compose v2, as
// `docker compose --project-directory DIR --env-file FILE -f A -f B config --format json` does:
// the files merged in order, variables interpolated from the env file and the process's
// environment (a `${X:?message}` left unset is an error), the merged model validated against the
// Compose Specification's schema, normalized and checked for consistency (every service, network,
// volume, secret or config named is defined). It prints the normalized model as JSON on stdout;
// the loader's warnings go to stderr, and make the exit status 3 when -strict is given.
//
//	compose-config [-project-directory DIR] [-env-file FILE] [-strict] FILE [FILE...]
//
// Built by scripts/deploycheck/compose-config; read by scripts/check_deploy.py.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/sirupsen/logrus"
)

// warnings counts what the loader logs at warning level or above (an obsolete `version:`, for one).
type warnings struct{ count int }

func (w *warnings) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (w *warnings) Fire(*logrus.Entry) error {
	w.count++
	return nil
}

type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	var envFiles files
	projectDir := flag.String("project-directory", "", "the project directory (default: the first file's directory)")
	flag.Var(&envFiles, "env-file", "an env file for interpolation (repeatable; default: .env in the project directory)")
	strict := flag.Bool("strict", false, "exit 3 when the loader warned")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: compose-config [-project-directory DIR] [-env-file FILE] [-strict] FILE [FILE...]")
		os.Exit(2)
	}
	logrus.SetOutput(os.Stderr)
	seen := &warnings{}
	logrus.AddHook(seen)

	options, err := cli.NewProjectOptions(flag.Args(),
		cli.WithWorkingDirectory(*projectDir),
		cli.WithOsEnv,
		cli.WithEnvFiles(envFiles...),
		cli.WithDotEnv,
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		fmt.Fprintf(os.Stderr, "compose-config: %v\n", err)
		os.Exit(1)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "compose-config: %v\n", err)
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintf(os.Stderr, "compose-config: %v\n", err)
		os.Exit(1)
	}
	os.Stdout.Write(append(out, '\n'))
	if *strict && seen.count > 0 {
		os.Exit(3)
	}
}
