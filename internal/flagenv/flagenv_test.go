package flagenv_test

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/flagenv"
)

func TestParse(t *testing.T) {
	t.Parallel()
	envFor := map[string]string{"addr": "X_ADDR", "wait": "X_WAIT"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		addr    string
		wait    time.Duration
		wantErr string
	}{
		{name: "defaults", addr: "a", wait: time.Second},
		{name: "env sets", env: map[string]string{"X_ADDR": "b", "X_WAIT": "2s"}, addr: "b", wait: 2 * time.Second},
		{name: "flag wins", args: []string{"-addr", "c"}, env: map[string]string{"X_ADDR": "b"}, addr: "c", wait: time.Second},
		{name: "bad env", env: map[string]string{"X_WAIT": "soon"}, wantErr: "X_WAIT"},
		{name: "positional", args: []string{"extra"}, wantErr: "unexpected arguments: extra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			addr := fs.String("addr", "a", "")
			wait := fs.Duration("wait", time.Second, "")
			err := flagenv.Parse(fs, tt.args, envFor, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *addr != tt.addr || *wait != tt.wait {
				t.Errorf("addr %q wait %v, want %q %v", *addr, *wait, tt.addr, tt.wait)
			}
		})
	}
}
