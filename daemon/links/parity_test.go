package links

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tgtun/tgtun/daemon/config"
)

// parityFixture is shared with the LuCI form's link parser
// (luci-app/tests/links.test.js): both must give the same options for a
// link, or both refuse it naming the same part.
var parityFixture = filepath.Join("..", "..", "luci-app", "tests", "fixtures", "links.json")

type parityCase struct {
	Link    string         `json:"link"`
	Options map[string]any `json:"options"`
	Error   []string       `json:"error"`
	// Ignored are the parameters the parser reports as not used (sorted; none
	// when absent).
	Ignored []string `json:"ignored"`
}

func loadParity(t *testing.T) []parityCase {
	t.Helper()
	data, err := os.ReadFile(parityFixture)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Links []parityCase `json:"links"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", parityFixture, err)
	}
	if len(f.Links) == 0 {
		t.Fatalf("%s holds no links", parityFixture)
	}
	return f.Links
}

// importLink does what `tgtun proxy import` does before writing: parse the
// link, then check the section as `config check` does (the form's checks, which
// cannot build the proxy; daemon's TestImportFixture adds the daemon's rules).
func importLink(link string) (map[string]any, []string, error) {
	p, err := Parse(link)
	if err != nil {
		return nil, nil, err
	}
	var ignored []string
	for _, ig := range p.Ignored {
		ignored = append(ignored, ig.Param)
	}
	slices.Sort(ignored)
	if _, _, err := config.Parse("link", bytes.NewReader([]byte(p.UCI("x")))); err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			msgs := make([]string, len(errs))
			for i, e := range errs {
				msgs[i] = e.Error()
			}
			return nil, nil, errors.New(strings.Join(msgs, "; "))
		}
		return nil, nil, err
	}
	opts := map[string]any{}
	for _, o := range p.Options {
		if o.List {
			vals := make([]any, len(o.Values))
			for i, v := range o.Values {
				vals[i] = v
			}
			opts[o.Name] = vals
		} else {
			opts[o.Name] = o.Values[0]
		}
	}
	return opts, ignored, nil
}

func TestParityFixture(t *testing.T) {
	for _, c := range loadParity(t) {
		if (c.Options == nil) == (len(c.Error) == 0) {
			t.Errorf("%s: the fixture must give either options or error", c.Link)
			continue
		}
		got, ignored, err := importLink(c.Link)
		if c.Options != nil {
			if err != nil {
				t.Errorf("%s: %v; want options %v", c.Link, err, c.Options)
			} else if !reflect.DeepEqual(got, c.Options) {
				t.Errorf("%s:\n got %v\nwant %v", c.Link, got, c.Options)
			}
			if !slices.Equal(ignored, c.Ignored) {
				t.Errorf("%s: ignored %q, want %q", c.Link, ignored, c.Ignored)
			}
			continue
		}
		if c.Ignored != nil {
			t.Errorf("%s: a refused link lists ignored parameters", c.Link)
		}
		if err == nil {
			t.Errorf("%s: parsed to %v; want an error containing %q", c.Link, got, c.Error)
			continue
		}
		for _, part := range c.Error {
			if !strings.Contains(err.Error(), part) {
				t.Errorf("%s: error %q does not contain %q", c.Link, err, part)
			}
		}
	}
}
