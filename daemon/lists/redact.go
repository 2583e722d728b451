package lists

import (
	"net/url"
	"slices"
	"strings"
)

// RedactURL is a list URL as logs, errors, status and the cache header show it: the
// user information (user:password@) and the query (where tokens travel) are replaced by
// "<redacted>", the fragment is dropped; scheme, host and path stay so the admin can
// still tell which list it is. Something that does not parse as a URL is hidden whole.
func RedactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" && u.Opaque != "" {
		return "<redacted URL>"
	}
	var b strings.Builder
	if u.Scheme != "" {
		b.WriteString(u.Scheme)
		b.WriteString("://")
	}
	if u.User != nil {
		b.WriteString("<redacted>@")
	}
	b.WriteString(u.Host)
	b.WriteString(u.EscapedPath())
	if u.RawQuery != "" || u.ForceQuery {
		b.WriteString("?<redacted>")
	}
	return b.String()
}

// redactedError is an error whose text had a list URL's secrets taken out; Unwrap
// still reaches the cause (errors.Is keeps working).
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// scrubURL takes every form of raw that net/http and the dialers put into error texts
// (as given, as re-encoded, with the password masked, the user information and the
// query alone) out of err's text.
func scrubURL(err error, raw string) error {
	if err == nil || raw == "" {
		return err
	}
	msg := err.Error()
	var secrets []string
	secrets = append(secrets, raw)
	if u, perr := url.Parse(raw); perr == nil {
		secrets = append(secrets, u.String(), u.Redacted())
		if u.User != nil {
			secrets = append(secrets, u.User.String(), u.User.Username())
			if p, ok := u.User.Password(); ok && p != "" {
				secrets = append(secrets, p)
				// net/http's client masks the password as "***" in its errors.
				masked := *u
				masked.User = url.UserPassword(u.User.Username(), "***")
				secrets = append(secrets, masked.String())
			}
		}
		if u.RawQuery != "" {
			secrets = append(secrets, u.RawQuery)
		}
	}
	red := RedactURL(raw)
	// Whole URLs first, then their parts.
	slices.SortStableFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, red)
		}
	}
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}
