package subs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tgtun/tgtun/daemon/config"
)

// DialFunc connects to address ("host:port") for fetching a subscription through via
// ("" the pool, config.ViaDirect, or a proxy's name) and says which way the connection
// went, for status ("direct", "proxy", "proxy 'name'").
type DialFunc func(ctx context.Context, via, address string) (net.Conn, string, error)

// DefaultTimeout bounds one fetch: connection, headers and body.
const DefaultTimeout = time.Minute

// fetched is a subscription's answer.
type fetched struct {
	body     Body
	userinfo *Userinfo
	interval time.Duration // profile-update-interval; 0 when not given
	announce string
	path     string // how the connection went
}

// fetch downloads sub's URL through dial, as a client of sub.UserAgent with the device
// headers (unless turned off). Its errors never show the URL, which carries a token.
func fetch(ctx context.Context, dial DialFunc, sub config.Subscription, dev Device, timeout time.Duration) (*fetched, error) {
	f, err := fetchRaw(ctx, dial, sub, dev, timeout)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		msg := err.Error()
		for _, secret := range urlSecrets(sub.URL) {
			msg = strings.ReplaceAll(msg, secret, "<redacted>")
		}
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) || strings.Contains(msg, "Client.Timeout") {
			msg = fmt.Sprintf("no answer within %s (%s)", timeout, msg)
		}
		return nil, errors.New(msg)
	}
	return f, nil
}

func fetchRaw(ctx context.Context, dial DialFunc, sub config.Subscription, dev Device, timeout time.Duration) (*fetched, error) {
	f := &fetched{}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			c, path, err := dial(ctx, sub.Via, addr)
			if err == nil {
				f.path = path
			}
			return c, err
		},
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: timeout,
		DisableKeepAlives:     true,
		ForceAttemptHTTP2:     true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: timeout}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sub.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("User-Agent", sub.UserAgent)
	req.Header.Set("Accept", "*/*") // never text/html: panels send browsers a web page
	if sub.DeviceHeaders {
		if sub.HWID != "" {
			dev.HWID = sub.HWID
		}
		req.Header.Set("X-HWID", dev.HWID)
		req.Header.Set("X-Device-OS", dev.OS)
		req.Header.Set("X-Ver-OS", dev.OSVersion)
		req.Header.Set("X-Device-Model", dev.Model)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	refused := refusal(resp.Header.Get, sub.DeviceHeaders)
	if resp.StatusCode != http.StatusOK {
		if refused != "" {
			return nil, fmt.Errorf("HTTP %s: %s", resp.Status, refused)
		}
		return nil, fmt.Errorf("HTTP %s", printable(resp.Status, 60))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read the body: %w", err)
	}
	if len(data) > MaxBodyBytes {
		return nil, fmt.Errorf("the body is larger than %d bytes", MaxBodyBytes)
	}
	body, err := DecodeBody(data)
	if err != nil {
		if refused != "" {
			return nil, errors.New(refused)
		}
		return nil, err
	}
	f.body = body
	header := func(name string) string {
		if v := resp.Header.Get(name); v != "" {
			return v
		}
		return body.Meta[name]
	}
	if u, ok := ParseUserinfo(header("subscription-userinfo")); ok {
		f.userinfo = &u
	}
	f.interval = ParseInterval(header("profile-update-interval"))
	f.announce = ParseText(header("announce"), 200)
	return f, nil
}

// RedactURL is a subscription URL as status, logs and errors show it: scheme and host
// only. Unlike a list's URL, its path is the account's token (…/sub/TOKEN).
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "<redacted URL>"
	}
	s := u.Scheme + "://" + u.Host
	if u.User != nil {
		s = u.Scheme + "://<redacted>@" + u.Host
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		s += "/<redacted>"
	}
	return s
}

// host is the host name of a URL, for the device id.
func host(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// urlSecrets are the parts of a subscription URL an error text must not show: the URL
// itself, its path and query (the token), its user information.
func urlSecrets(raw string) []string {
	out := []string{raw}
	if u, err := url.Parse(raw); err == nil {
		out = append(out, u.String(), u.EscapedPath(), u.RawQuery)
		if u.User != nil {
			out = append(out, u.User.String())
		}
	}
	return slices.DeleteFunc(out, func(s string) bool { return s == "" || s == "/" })
}
