/*
 * replay_cli - `sophiad replay STREAM --from X --to Y (--dry-run |
 * --target NAME)`: an HTTP client of a running daemon's POST
 * /api/streams/{name}/replay (http/api_streams.h). A dry run's JSON lines
 * go to stdout; a replay into a target is followed in /api/stats until
 * it ends, its final progress on stdout.
 */
#ifndef SOPHIA_REPLAY_CLI_H
#define SOPHIA_REPLAY_CLI_H

/* argv[0] is "replay". The exit code: 0 done, 1 refused or failed, 2 a
 * bad command line. */
int sophia_replay_cli(int argc, char **argv);

#endif
