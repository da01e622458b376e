// Package uitest holds the hub dashboard's browser tests: Debian's
// headless Chromium, driven by chromedp, against a real hub, agent and
// PVE simulator on loopback. It has no code of its own.
package uitest
