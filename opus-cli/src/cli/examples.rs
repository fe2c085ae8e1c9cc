//! The examples that end the `--help` of the main commands: what a new user copies first.

/// `opus add --help`.
pub const ADD: &str = "\
Examples:
  opus add web https://github.com/acme/web.git        a git repository (builds `main`)
  opus add web git@github.com:acme/web.git -b develop  over ssh, building `develop`
  opus add web ./my-site                              a local folder, copied for each build";

/// `opus trigger --help`.
pub const TRIGGER: &str = "\
Examples:
  opus trigger web --wait            build the default branch and follow its log
  opus trigger web feature/login     a branch (it deploys to its preview when previews are on)
  opus trigger web v1.2.0            a tag: the version is `v1.2.0`
  opus trigger web main --version 2.0.0-rc1";

/// `opus logs --help`.
pub const LOGS: &str = "\
Examples:
  opus logs web#12         the whole log of build 12 of web
  opus logs 12 -f          follow a running build until it ends";

/// `opus publish --help`.
pub const PUBLISH: &str = "\
Examples:
  npm run build && opus publish web 1.4.0 dist/
  opus publish web 1.4.0 dist/ --store s3      into a store opusd was started with";

/// `opus download --help`.
pub const DOWNLOAD: &str = "\
Examples:
  opus download web 1.4.0                  writes web-1.4.0.tar.gz
  opus download web 1.4.0 ./web.tgz        or --out ./web.tgz
  opus download web 1.4.0 --extract site/  unpacks into a new or empty folder";

/// `opus deploy --help`.
pub const DEPLOY: &str = "\
Examples:
  opus deploy web 1.4.0                 to production
  opus deploy web 1.4.0 -e staging      to staging (created on first deploy)
  opus artifacts web                    the versions there are, and where each is deployed";

/// `opus rollback --help`.
pub const ROLLBACK: &str = "\
Examples:
  opus rollback web                     production back to its previous release
  opus rollback web -e staging --to 1.3.2
  opus env unpin web                    let automatic deploys move production again";

/// `opus secret --help`.
pub const SECRET: &str = "\
Examples:
  opus secret set web NPM_TOKEN                 asks for the value twice, without echo
  printf %s \"$TOKEN\" | opus secret set web NPM_TOKEN   from standard input, for scripts
  opus secret list web                          names only: values never come back
  opus secret unset web NPM_TOKEN";

/// `opus completions --help`.
pub const COMPLETIONS: &str = "\
Examples:
  opus completions bash > ~/.local/share/bash-completion/completions/opus
  opus completions zsh > \"${fpath[1]}/_opus\"
  opus completions fish > ~/.config/fish/completions/opus.fish";
