//! Parent–child ("tree") mode: repositories → issues → comments, three list endpoints where
//! each child list hangs off a parent id, so a fetcher must walk parents to reach children and
//! should re-walk only the parents that changed.
//!
//! With `--tree-repos N` the simulator starts with `N` repositories, each with `--tree-issues`
//! issues of `--tree-comments` comments each, all generated from `--seed`. The tree has its own
//! logical clock: 2026-01-01T00:00:00.000Z plus one millisecond per tick, and every record
//! written takes the next tick, so no two `updated_at` ever repeat and a later write is always
//! later (`updated_at` is the record's version downstream). Children take their ticks before
//! their parent (at start and in every mutation), so a record's `updated_at` is never older
//! than any of its descendants'.
//!
//! | endpoint (guarded as `/v1`: auth → quota → faults) | answer |
//! |------------------------------------------|--------|
//! | `GET /v1/tree/repos[?since=<RFC 3339>]` | repositories with `updated_at >= since` |
//! | `GET /v1/tree/repos/{repo}/issues`      | the repository's issues; 404 if it does not exist |
//! | `GET /v1/tree/issues/{issue}/comments`  | the issue's comments; 404 if it does not exist |
//!
//! Each takes `cursor` (opaque, from the previous page) and `limit` (1..=1000, default 100)
//! and answers `{"data": [...], "next_cursor": "<token>" | null}` (`null` on the last page),
//! records in id order (repositories by their number). A cursor on the repositories carries the
//! `since` it was issued under. Other parameters are ignored. Records:
//!
//! - repository `{"id": "repo-0001", "name", "stars", "updated_at"}`
//! - issue `{"id": <int>, "repo": "repo-0001", "title", "state": "open"|"closed", "updated_at"}`
//! - comment `{"id": <int>, "issue_id": <int>, "body", "updated_at"}`
//!
//! Issue and comment ids are unique across the tree and never reused; times are
//! `YYYY-MM-DDTHH:MM:SS.mmmZ`.
//!
//! **Mutations.** `POST /admin/tree/mutate` with `{"seed", "delete_repos", "delete_issues",
//! "delete_comments", "update_repos", "update_issues", "update_comments", "add_repos",
//! "add_issues", "add_comments"}` (each optional, 0 by default) applies them in that order,
//! choosing distinct live targets from (`--seed`, `seed`); where fewer records live than asked,
//! it does what it can. Deletes come first, so nothing updated or added by a call is deleted by
//! it. Every write gives the record (if it still exists) and then each live ancestor a new tick:
//! a comment added, updated or deleted moves its issue and that issue's repository on; an issue
//! added, updated or deleted moves its repository on. An update changes a content field too
//! (`stars`; `title` and maybe `state`; `body`). Deleting an issue deletes its comments;
//! deleting a repository its issues and their comments. A new repository comes with
//! `--tree-issues` issues, a new issue (added alone or with a repository) with
//! `--tree-comments` comments. The answer names the ids written:
//! `{"updated": {"repos": [...], "issues": [...], "comments": [...]}, "added": {...},
//! "deleted": {...}, "ghosted": {...}}` (`added` includes the issues and comments created with
//! a new parent, `deleted` the descendants deleted with one).
//!
//! **Ghosts.** `"ghost_repos": n` (after the deletes) models a repository deleted between the
//! list a client read and its request for the issues: the repository stays in the list (moved
//! on to a new tick, so a client sees it changed) while its issues and their comments are
//! deleted and `GET …/issues` answers 404. The truth lists the ghost, not its issues.
//!
//! `GET /admin/tree/truth` lists every live record as the list endpoints serve it
//! (`{"repos", "issues", "comments"}`, by id). `GET /admin/tree/stats` counts the requests
//! that passed the guard per endpoint, the 404s served, and the distinct parents whose child
//! lists were asked for (`issue_parents`: repositories, `comment_parents`: issues; any page,
//! 404s included); `POST /admin/tree/stats/reset` answers the counters and zeroes them.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{debug, info};

use super::clock::{format_ms, parse_rfc3339_ns};
use super::error::{ApiError, SimError};
use super::faults::cut_short;
use super::pagination::number;
use super::seeded::Rand;
use super::state::SimState;

/// 2026-01-01T00:00:00Z in unix ms: tick 0 of the tree's clock.
pub const TREE_BASE_MS: i64 = 1_767_225_600_000;
/// Page sizes of the tree's lists.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Most records the tree may hold at start, and create in one mutation.
const MAX_RECORDS: u64 = 10_000_000;

/// Flags of the tree mode (part of `intake sim`'s flags).
#[derive(clap::Args, Debug, Clone)]
pub struct TreeArgs {
    /// Repositories of the parent–child mode (`GET /v1/tree/…`, see `sim::tree`) at start; 0:
    /// the tree is empty until `POST /admin/tree/mutate` adds some.
    #[arg(
        long = "tree-repos",
        env = "INTAKE_SIM_TREE_REPOS",
        default_value_t = 0
    )]
    pub repos: u32,

    /// Issues of each repository of the tree at start (and of each repository added later).
    #[arg(
        long = "tree-issues",
        env = "INTAKE_SIM_TREE_ISSUES",
        default_value_t = 10
    )]
    pub issues: u32,

    /// Comments of each issue of the tree at start (and of each issue added later).
    #[arg(
        long = "tree-comments",
        env = "INTAKE_SIM_TREE_COMMENTS",
        default_value_t = 3
    )]
    pub comments: u32,
}

impl TreeArgs {
    /// Records one repository brings with it (itself, its issues, their comments).
    fn per_repo(&self) -> Option<u64> {
        u64::from(self.issues)
            .checked_mul(1 + u64::from(self.comments))?
            .checked_add(1)
    }

    /// Checks the flags; names the offending one.
    ///
    /// # Errors
    ///
    /// [`SimError::Config`] when the tree at start would exceed ten million records.
    pub fn validate(&self) -> Result<(), SimError> {
        let total = self
            .per_repo()
            .and_then(|per| per.checked_mul(u64::from(self.repos)));
        match total {
            Some(t) if t <= MAX_RECORDS => Ok(()),
            _ => Err(SimError::config(
                "--tree-repos",
                format!(
                    "--tree-repos × (1 + --tree-issues × (1 + --tree-comments)) must not exceed {MAX_RECORDS} records"
                ),
            )),
        }
    }
}

/// The id a repository number is served as.
pub fn repo_id(num: u64) -> String {
    format!("repo-{num:04}")
}

/// The number of a served repository id; `None` unless it is exactly as [`repo_id`] writes it.
pub fn repo_num(id: &str) -> Option<u64> {
    let num: u64 = id.strip_prefix("repo-")?.parse().ok()?;
    (repo_id(num) == id).then_some(num)
}

const ADJECTIVES: [&str; 12] = [
    "quiet", "rapid", "amber", "brave", "lucid", "noble", "sunny", "misty", "bold", "calm",
    "eager", "fuzzy",
];
const NOUNS: [&str; 12] = [
    "river", "falcon", "harbor", "meadow", "summit", "canyon", "lantern", "orchard", "glacier",
    "comet", "willow", "beacon",
];
const VERBS: [&str; 8] = [
    "Fix",
    "Document",
    "Speed up",
    "Refactor",
    "Test",
    "Deprecate",
    "Support",
    "Log",
];
const AREAS: [&str; 8] = [
    "the parser",
    "the scheduler",
    "retries",
    "the cache",
    "pagination",
    "the CLI",
    "TLS setup",
    "metrics",
];
const REMARKS: [&str; 8] = [
    "I can reproduce this on main.",
    "Could you share the logs?",
    "This looks like a duplicate.",
    "A fix is on the way.",
    "Works for me after the update.",
    "Adding a test for it.",
    "Closing in favour of the new design.",
    "Still happens with the latest release.",
];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Repo {
    name: String,
    stars: u64,
    updated_ms: i64,
    /// Content revision: 0 at creation, +1 per update.
    rev: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Issue {
    repo: u64,
    title: String,
    open: bool,
    updated_ms: i64,
    rev: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Comment {
    issue: u64,
    body: String,
    updated_ms: i64,
    rev: u64,
}

/// Ids written by a mutation, by kind.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Ids {
    /// Repository ids (`repo-0001`).
    pub repos: Vec<String>,
    /// Issue ids.
    pub issues: Vec<u64>,
    /// Comment ids.
    pub comments: Vec<u64>,
}

impl Ids {
    fn sort(&mut self) {
        // Repository ids sort by number, as the list serves them.
        self.repos
            .sort_by_key(|id| repo_num(id).unwrap_or(u64::MAX));
        self.issues.sort_unstable();
        self.comments.sort_unstable();
    }
}

/// The answer of `POST /admin/tree/mutate`.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Records updated (all live after the call).
    pub updated: Ids,
    /// Records created, with the issues and comments created under a new parent.
    pub added: Ids,
    /// Records deleted, with the descendants deleted with them.
    pub deleted: Ids,
    /// Repositories left listed whose issues answer 404 (their issues and comments are in
    /// `deleted`).
    pub ghosted: Ids,
}

/// The body of `POST /admin/tree/mutate`: how many of each write, and the seed choosing targets.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Mutation {
    /// Chooses the targets (with `--seed`).
    pub seed: u64,
    /// Repositories to update (`stars`).
    pub update_repos: u64,
    /// Issues to update (`title`, maybe `state`).
    pub update_issues: u64,
    /// Issues to add, each to a live repository.
    pub add_issues: u64,
    /// Issues to delete, with their comments.
    pub delete_issues: u64,
    /// Comments to update (`body`).
    pub update_comments: u64,
    /// Comments to add, each to a live issue.
    pub add_comments: u64,
    /// Comments to delete.
    pub delete_comments: u64,
    /// Repositories to delete, with their issues and comments.
    pub delete_repos: u64,
    /// Repositories to add, each with `--tree-issues` issues.
    pub add_repos: u64,
    /// Repositories left in the list whose issues are deleted and answer 404 (see the module
    /// docs: a parent gone between the list and the request for its children).
    pub ghost_repos: u64,
}

/// One page of a list: the body's records and the last id when more follow.
#[derive(Debug)]
struct Page {
    data: Vec<Value>,
    next_after: Option<u64>,
}

/// The tree's records and clock (no counters, no locks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forest {
    seed: u64,
    issues_per_repo: u32,
    comments_per_issue: u32,
    repos: BTreeMap<u64, Repo>,
    issues: BTreeMap<u64, Issue>,
    comments: BTreeMap<u64, Comment>,
    /// Live issue ids of each live repository.
    repo_issues: BTreeMap<u64, BTreeSet<u64>>,
    /// Live comment ids of each live issue.
    issue_comments: BTreeMap<u64, BTreeSet<u64>>,
    /// Listed repositories whose issues answer 404.
    ghosts: BTreeSet<u64>,
    next_repo: u64,
    next_issue: u64,
    next_comment: u64,
    /// Ticks taken so far.
    ticks: i64,
}

/// `n` distinct items of `pool` (all of them if fewer), chosen by `rng`, in pool order.
fn choose<T: Copy + Ord>(rng: &mut Rand, mut pool: Vec<T>, n: u64) -> Vec<T> {
    let n = usize::try_from(n).unwrap_or(usize::MAX).min(pool.len());
    for i in 0..n {
        let j = i + rng.below((pool.len() - i) as u64) as usize;
        pool.swap(i, j);
    }
    pool.truncate(n);
    pool.sort_unstable();
    pool
}

/// `n` distinct keys of `records` (all of them if fewer), chosen by `rng`, in key order.
fn choose_keys<V>(rng: &mut Rand, records: &BTreeMap<u64, V>, n: u64) -> Vec<u64> {
    choose(rng, records.keys().copied().collect(), n)
}

/// The first `limit` ids of a sorted run, and whether more follow.
fn window<T: Ord + Copy>(ids: impl Iterator<Item = T>, limit: usize) -> (Vec<T>, bool) {
    let mut taken: Vec<T> = ids.take(limit + 1).collect();
    let more = taken.len() > limit;
    taken.truncate(limit);
    (taken, more)
}

fn after_bound(after: Option<u64>) -> (Bound<u64>, Bound<u64>) {
    match after {
        Some(a) => (Bound::Excluded(a), Bound::Unbounded),
        None => (Bound::Unbounded, Bound::Unbounded),
    }
}

impl Forest {
    /// The tree at start: `args.repos` repositories generated from `seed`.
    pub fn new(args: &TreeArgs, seed: u64) -> Self {
        let mut forest = Self {
            seed,
            issues_per_repo: args.issues,
            comments_per_issue: args.comments,
            repos: BTreeMap::new(),
            issues: BTreeMap::new(),
            comments: BTreeMap::new(),
            repo_issues: BTreeMap::new(),
            issue_comments: BTreeMap::new(),
            ghosts: BTreeSet::new(),
            next_repo: 1,
            next_issue: 1,
            next_comment: 1,
            ticks: 0,
        };
        let mut ignored = Ids::default();
        for _ in 0..args.repos {
            forest.create_repo(&mut ignored);
        }
        forest
    }

    /// The next tick, in unix ms.
    fn tick(&mut self) -> i64 {
        self.ticks += 1;
        TREE_BASE_MS + self.ticks
    }

    fn rng(&self, kind: &str, id: u64, rev: u64) -> Rand {
        Rand::new(self.seed, "tree", &format!("{kind}/{id}/{rev}"))
    }

    fn repo_content(&self, num: u64, rev: u64) -> (String, u64) {
        let mut r = self.rng("repo", num, rev);
        let name = format!("{}-{}-{num}", r.pick(&ADJECTIVES), r.pick(&NOUNS));
        (name, r.below(5000))
    }

    fn issue_title(&self, id: u64, rev: u64) -> String {
        let mut r = self.rng("issue", id, rev);
        let title = format!(
            "{} {} in {}",
            r.pick(&VERBS),
            r.pick(&NOUNS),
            r.pick(&AREAS)
        );
        if rev == 0 {
            title
        } else {
            format!("{title} (edit {rev})")
        }
    }

    fn comment_body(&self, id: u64, rev: u64) -> String {
        let mut r = self.rng("comment", id, rev);
        let body = format!("{} {}", r.pick(&REMARKS), r.pick(&REMARKS));
        if rev == 0 {
            body
        } else {
            format!("{body} (edit {rev})")
        }
    }

    /// A new comment under a live issue (its ancestors are not moved on here).
    fn create_comment(&mut self, issue: u64, added: &mut Ids) -> u64 {
        let id = self.next_comment;
        self.next_comment += 1;
        let body = self.comment_body(id, 0);
        let updated_ms = self.tick();
        self.comments.insert(
            id,
            Comment {
                issue,
                body,
                updated_ms,
                rev: 0,
            },
        );
        self.issue_comments.entry(issue).or_default().insert(id);
        added.comments.push(id);
        id
    }

    /// A new issue with its comments under a live repository (the repository is not moved on
    /// here). The comments take their ticks first.
    fn create_issue(&mut self, repo: u64, added: &mut Ids) -> u64 {
        let id = self.next_issue;
        self.next_issue += 1;
        let title = self.issue_title(id, 0);
        let open = self.rng("issue-state", id, 0).chance(0.7);
        self.issues.insert(
            id,
            Issue {
                repo,
                title,
                open,
                updated_ms: 0,
                rev: 0,
            },
        );
        self.repo_issues.entry(repo).or_default().insert(id);
        self.issue_comments.insert(id, BTreeSet::new());
        for _ in 0..self.comments_per_issue {
            self.create_comment(id, added);
        }
        self.tick_issue(id);
        added.issues.push(id);
        id
    }

    /// A new repository with its issues; its tick comes after theirs.
    fn create_repo(&mut self, added: &mut Ids) -> u64 {
        let num = self.next_repo;
        self.next_repo += 1;
        let (name, stars) = self.repo_content(num, 0);
        self.repos.insert(
            num,
            Repo {
                name,
                stars,
                updated_ms: 0,
                rev: 0,
            },
        );
        self.repo_issues.insert(num, BTreeSet::new());
        for _ in 0..self.issues_per_repo {
            self.create_issue(num, added);
        }
        self.touch_repo(num);
        added.repos.push(repo_id(num));
        num
    }

    /// Moves a live repository on to a new tick.
    fn touch_repo(&mut self, num: u64) {
        if self.repos.contains_key(&num) {
            let at = self.tick();
            if let Some(repo) = self.repos.get_mut(&num) {
                repo.updated_ms = at;
            }
        }
    }

    /// Moves a live issue on to a new tick; answers its repository (not moved on here).
    fn tick_issue(&mut self, id: u64) -> Option<u64> {
        if !self.issues.contains_key(&id) {
            return None;
        }
        let at = self.tick();
        let issue = self.issues.get_mut(&id)?;
        issue.updated_ms = at;
        Some(issue.repo)
    }

    /// Moves a live issue, then its repository, on to new ticks.
    fn touch_issue(&mut self, id: u64) {
        if let Some(repo) = self.tick_issue(id) {
            self.touch_repo(repo);
        }
    }

    fn delete_comment(&mut self, id: u64, deleted: &mut Ids) -> Option<u64> {
        let comment = self.comments.remove(&id)?;
        if let Some(set) = self.issue_comments.get_mut(&comment.issue) {
            set.remove(&id);
        }
        deleted.comments.push(id);
        Some(comment.issue)
    }

    fn delete_issue(&mut self, id: u64, deleted: &mut Ids) -> Option<u64> {
        let issue = self.issues.remove(&id)?;
        for c in self.issue_comments.remove(&id).unwrap_or_default() {
            self.comments.remove(&c);
            deleted.comments.push(c);
        }
        if let Some(set) = self.repo_issues.get_mut(&issue.repo) {
            set.remove(&id);
        }
        deleted.issues.push(id);
        Some(issue.repo)
    }

    fn delete_repo(&mut self, num: u64, deleted: &mut Ids) {
        if self.repos.remove(&num).is_none() {
            return;
        }
        self.ghosts.remove(&num);
        for i in self.repo_issues.remove(&num).unwrap_or_default() {
            self.delete_issue(i, deleted);
        }
        deleted.repos.push(repo_id(num));
    }

    /// Gives a live repository new `stars` (always a different count) and a new tick.
    fn update_repo(&mut self, num: u64) {
        let rev = self.repos[&num].rev + 1;
        let (_, fresh) = self.repo_content(num, rev);
        let at = self.tick();
        if let Some(repo) = self.repos.get_mut(&num) {
            // Always a different count: the stars move by 1..=fresh%50+1 up or down.
            let step = 1 + fresh % 50;
            repo.stars = if fresh % 3 == 0 && repo.stars >= step {
                repo.stars - step
            } else {
                repo.stars + step
            };
            repo.rev = rev;
            repo.updated_ms = at;
        }
    }

    /// Gives a live issue a new title, maybe a new state, and a new tick; answers its
    /// repository (not moved on here).
    fn update_issue(&mut self, id: u64) -> Option<u64> {
        let rev = self.issues[&id].rev + 1;
        let title = self.issue_title(id, rev);
        let flip = self.rng("issue-state", id, rev).chance(0.5);
        let at = self.tick();
        let issue = self.issues.get_mut(&id)?;
        issue.title = title;
        issue.open ^= flip;
        issue.rev = rev;
        issue.updated_ms = at;
        Some(issue.repo)
    }

    /// Gives a live comment a new body and a new tick; answers its issue (not moved on here).
    fn update_comment(&mut self, id: u64) -> Option<u64> {
        let rev = self.comments[&id].rev + 1;
        let body = self.comment_body(id, rev);
        let at = self.tick();
        let comment = self.comments.get_mut(&id)?;
        comment.body = body;
        comment.rev = rev;
        comment.updated_ms = at;
        Some(comment.issue)
    }

    /// Live repositories that are not ghosts, by number.
    fn unghosted_repos(&self) -> Vec<u64> {
        self.repos
            .keys()
            .filter(|n| !self.ghosts.contains(n))
            .copied()
            .collect()
    }

    /// Applies a mutation (see the module docs for the order and the rules).
    pub fn mutate(&mut self, m: &Mutation) -> Summary {
        let mut rng = Rand::new(self.seed, "tree-mutate", &m.seed.to_string());
        let mut s = Summary::default();

        for num in choose_keys(&mut rng, &self.repos, m.delete_repos) {
            self.delete_repo(num, &mut s.deleted);
        }
        for id in choose_keys(&mut rng, &self.issues, m.delete_issues) {
            if let Some(repo) = self.delete_issue(id, &mut s.deleted) {
                self.touch_repo(repo);
            }
        }
        for id in choose_keys(&mut rng, &self.comments, m.delete_comments) {
            if let Some(issue) = self.delete_comment(id, &mut s.deleted) {
                self.touch_issue(issue);
            }
        }

        let targets = choose(&mut rng, self.unghosted_repos(), m.ghost_repos);
        for num in targets {
            for i in self.repo_issues.remove(&num).unwrap_or_default() {
                self.delete_issue(i, &mut s.deleted);
            }
            self.ghosts.insert(num);
            self.touch_repo(num);
            s.ghosted.repos.push(repo_id(num));
        }

        for num in choose_keys(&mut rng, &self.repos, m.update_repos) {
            self.update_repo(num);
            s.updated.repos.push(repo_id(num));
        }
        for id in choose_keys(&mut rng, &self.issues, m.update_issues) {
            if let Some(repo) = self.update_issue(id) {
                self.touch_repo(repo);
            }
            s.updated.issues.push(id);
        }
        for id in choose_keys(&mut rng, &self.comments, m.update_comments) {
            if let Some(issue) = self.update_comment(id) {
                self.touch_issue(issue);
            }
            s.updated.comments.push(id);
        }

        for _ in 0..m.add_repos {
            self.create_repo(&mut s.added);
        }
        for _ in 0..m.add_issues {
            let repos = self.unghosted_repos();
            if repos.is_empty() {
                break;
            }
            let repo = rng.pick(&repos);
            self.create_issue(repo, &mut s.added);
            self.touch_repo(repo);
        }
        for _ in 0..m.add_comments {
            if self.issues.is_empty() {
                break;
            }
            // The n-th live issue, without collecting them all per comment.
            let n = rng.below(self.issues.len() as u64) as usize;
            let Some(issue) = self.issues.keys().nth(n).copied() else {
                break;
            };
            self.create_comment(issue, &mut s.added);
            self.touch_issue(issue);
        }
        s.updated.sort();
        s.added.sort();
        s.deleted.sort();
        s.ghosted.sort();
        s
    }

    /// Records one mutation would create at most (for the request's cap).
    fn creates(&self, m: &Mutation) -> Option<u64> {
        let per_issue = 1 + u64::from(self.comments_per_issue);
        let per_repo = u64::from(self.issues_per_repo)
            .checked_mul(per_issue)?
            .checked_add(1)?;
        m.add_repos
            .checked_mul(per_repo)?
            .checked_add(m.add_issues.checked_mul(per_issue)?)?
            .checked_add(m.add_comments)
    }

    /// A live repository as the list serves it.
    fn repo_json(&self, num: u64) -> Option<Value> {
        let r = self.repos.get(&num)?;
        Some(json!({
            "id": repo_id(num), "name": r.name, "stars": r.stars,
            "updated_at": format_ms(r.updated_ms),
        }))
    }

    /// A live issue as the list serves it.
    fn issue_json(&self, id: u64) -> Option<Value> {
        let i = self.issues.get(&id)?;
        Some(json!({
            "id": id, "repo": repo_id(i.repo), "title": i.title,
            "state": if i.open { "open" } else { "closed" },
            "updated_at": format_ms(i.updated_ms),
        }))
    }

    /// A live comment as the list serves it.
    fn comment_json(&self, id: u64) -> Option<Value> {
        let c = self.comments.get(&id)?;
        Some(json!({
            "id": id, "issue_id": c.issue, "body": c.body,
            "updated_at": format_ms(c.updated_ms),
        }))
    }

    /// A page of repositories updated at or after `since_ns` (unix ns), after repository
    /// number `after`.
    fn repos_page(&self, since_ns: Option<i128>, after: Option<u64>, limit: usize) -> Page {
        let ids = self
            .repos
            .range(after_bound(after))
            .filter(|(_, r)| since_ns.is_none_or(|s| i128::from(r.updated_ms) * 1_000_000 >= s))
            .map(|(num, _)| *num);
        self.page(window(ids, limit), Self::repo_json)
    }

    /// A page of the repository's issues after issue `after`; `None` if it does not exist.
    fn issues_page(&self, repo: u64, after: Option<u64>, limit: usize) -> Option<Page> {
        let set = self.repo_issues.get(&repo)?;
        let ids = window(set.range(after_bound(after)).copied(), limit);
        Some(self.page(ids, Self::issue_json))
    }

    /// A page of the issue's comments after comment `after`; `None` if it does not exist.
    fn comments_page(&self, issue: u64, after: Option<u64>, limit: usize) -> Option<Page> {
        let set = self.issue_comments.get(&issue)?;
        let ids = window(set.range(after_bound(after)).copied(), limit);
        Some(self.page(ids, Self::comment_json))
    }

    /// The page of a [`window`]'s ids, each served by `json`.
    fn page(&self, (ids, more): (Vec<u64>, bool), json: fn(&Self, u64) -> Option<Value>) -> Page {
        Page {
            data: self.served(ids.iter().copied(), json),
            next_after: more.then(|| ids.last().copied()).flatten(),
        }
    }

    /// The records of `ids` that live, each served by `json`.
    fn served(
        &self,
        ids: impl Iterator<Item = u64>,
        json: fn(&Self, u64) -> Option<Value>,
    ) -> Vec<Value> {
        ids.filter_map(|id| json(self, id)).collect()
    }

    /// Every live record as the lists serve it, by id.
    pub fn truth(&self) -> Value {
        json!({
            "repos": self.served(self.repos.keys().copied(), Self::repo_json),
            "issues": self.served(self.issues.keys().copied(), Self::issue_json),
            "comments": self.served(self.comments.keys().copied(), Self::comment_json),
        })
    }
}

/// What the tree's lists served since the last reset.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct TreeStats {
    /// Requests that passed the guard, by list.
    pub requests: RequestCounts,
    /// 404s served, by list.
    pub not_found: NotFoundCounts,
    /// Distinct repositories whose issue lists were asked for.
    pub issue_parents: u64,
    /// Distinct issues whose comment lists were asked for.
    pub comment_parents: u64,
}

/// Requests per list.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct RequestCounts {
    /// `GET /v1/tree/repos`.
    pub repos: u64,
    /// `GET /v1/tree/repos/{repo}/issues`.
    pub issues: u64,
    /// `GET /v1/tree/issues/{issue}/comments`.
    pub comments: u64,
}

/// 404s per child list.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct NotFoundCounts {
    /// Issue lists of a repository that does not exist.
    pub issues: u64,
    /// Comment lists of an issue that does not exist.
    pub comments: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: RequestCounts,
    not_found: NotFoundCounts,
    issue_parents: BTreeSet<u64>,
    comment_parents: BTreeSet<u64>,
}

impl Counters {
    fn snapshot(&self) -> TreeStats {
        TreeStats {
            requests: self.requests.clone(),
            not_found: self.not_found.clone(),
            issue_parents: self.issue_parents.len() as u64,
            comment_parents: self.comment_parents.len() as u64,
        }
    }
}

#[derive(Debug)]
struct Inner {
    forest: Forest,
    counters: Counters,
}

/// The tree mode's state: records and counters behind one lock, never held across an await.
#[derive(Debug)]
pub struct Tree {
    inner: Mutex<Inner>,
}

impl Tree {
    /// From validated flags and `--seed`.
    pub fn new(args: &TreeArgs, seed: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                forest: Forest::new(args, seed),
                counters: Counters::default(),
            }),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("the tree's lock was poisoned by an earlier panic")
    }
}

/// The tree routes: the three lists behind the simulator's guard (auth, quota, faults), and
/// the mode's admin endpoints.
pub fn router(state: Arc<SimState>, args: &TreeArgs) -> Router<Arc<SimState>> {
    let tree = Arc::new(Tree::new(args, state.seed));
    let api = Router::new()
        .route("/v1/tree/repos", get(list_repos))
        .route(
            "/v1/tree/repos/{repo}/issues",
            children_route(Level::Issues),
        )
        .route(
            "/v1/tree/issues/{issue}/comments",
            children_route(Level::Comments),
        )
        .layer(middleware::from_fn_with_state(state, super::api::guard));
    Router::new()
        .merge(api)
        .route("/admin/tree/mutate", post(mutate))
        .route("/admin/tree/truth", get(truth))
        .route("/admin/tree/stats", get(stats))
        .route("/admin/tree/stats/reset", post(reset_stats))
        .layer(Extension(tree))
}

/// A list request's parameters.
#[derive(Debug, PartialEq, Eq)]
struct ListQuery {
    after: Option<u64>,
    since_ns: Option<i128>,
    limit: usize,
}

fn encode_cursor(since_ns: Option<i128>, after: u64) -> String {
    let since = since_ns.map(|s| s.to_string()).unwrap_or_default();
    hex::encode(format!("t1|{since}|{after}"))
}

fn invalid_cursor() -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_cursor",
        message: "the cursor is not one this API issued".to_owned(),
    }
}

fn decode_cursor(token: &str) -> Result<(Option<i128>, u64), ApiError> {
    let invalid = invalid_cursor;
    let text = hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid)?;
    let parts: Vec<&str> = text.split('|').collect();
    let ["t1", since, after] = parts.as_slice() else {
        return Err(invalid());
    };
    let since_ns = if since.is_empty() {
        None
    } else {
        Some(since.parse().map_err(|_| invalid())?)
    };
    Ok((since_ns, after.parse().map_err(|_| invalid())?))
}

/// Parses `cursor`, `limit` and (with `with_since`) `since`; other parameters are ignored, as
/// are empty values. The first of a repeated parameter counts.
fn parse_query(query: &str, with_since: bool) -> Result<ListQuery, ApiError> {
    let mut cursor = None;
    let mut limit = None;
    let mut since = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if v.is_empty() {
            continue;
        }
        let slot = match k.as_ref() {
            "cursor" => &mut cursor,
            "limit" => &mut limit,
            "since" if with_since => &mut since,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v.into_owned());
        }
    }
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(v) => number("limit", &v, 1, MAX_LIMIT)?,
    };
    let since_ns = since
        .map(|v| parse_rfc3339_ns(&v).map_err(|e| ApiError::bad_param(format!("since: {e}"))))
        .transpose()?;
    let mut q = ListQuery {
        after: None,
        since_ns,
        limit,
    };
    if let Some(token) = cursor {
        let (cursor_since, after) = decode_cursor(&token)?;
        if !with_since && cursor_since.is_some() {
            return Err(invalid_cursor());
        }
        if since_ns.is_some() && since_ns != cursor_since {
            return Err(ApiError::bad_param(
                "since differs from the one the cursor was issued under",
            ));
        }
        q.since_ns = cursor_since;
        q.after = Some(after);
    }
    Ok(q)
}

#[derive(Serialize)]
struct PageOut {
    data: Vec<Value>,
    next_cursor: Option<String>,
}

fn page_body(page: Page, since_ns: Option<i128>) -> Vec<u8> {
    let out = PageOut {
        data: page.data,
        next_cursor: page.next_after.map(|a| encode_cursor(since_ns, a)),
    };
    serde_json::to_vec(&out).expect("JSON values serialize")
}

/// The 200 answer of a page, cut short when the malformed-page fault strikes (as `/v1`).
fn answer(state: &SimState, body: Vec<u8>) -> Response {
    let body = if state.faults().malformed() {
        debug!("fault: malformed tree page");
        cut_short(&body)
    } else {
        body
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `GET /v1/tree/repos`.
async fn list_repos(
    State(state): State<Arc<SimState>>,
    Extension(tree): Extension<Arc<Tree>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let body = {
        let mut inner = tree.inner();
        inner.counters.requests.repos += 1;
        let q = parse_query(query.as_deref().unwrap_or(""), true)?;
        let page = inner.forest.repos_page(q.since_ns, q.after, q.limit);
        page_body(page, q.since_ns)
    };
    Ok(answer(&state, body))
}

/// The handler of a child list (`GET /v1/tree/repos/{repo}/issues`,
/// `GET /v1/tree/issues/{issue}/comments`): [`list_children`] at `level`.
fn children_route(level: Level) -> MethodRouter<Arc<SimState>> {
    get(
        move |State(state): State<Arc<SimState>>,
              Extension(tree): Extension<Arc<Tree>>,
              Path(parent): Path<String>,
              RawQuery(query): RawQuery| async move {
            list_children(&state, &tree, level, &parent, query.as_deref())
        },
    )
}

/// A level of children, listed per parent.
#[derive(Clone, Copy)]
enum Level {
    /// A repository's issues.
    Issues,
    /// An issue's comments.
    Comments,
}

/// One page of `parent`'s children at `level`, counted per level and per distinct parent; an
/// unknown parent is a counted 404.
fn list_children(
    state: &SimState,
    tree: &Tree,
    level: Level,
    parent: &str,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let body = {
        let mut inner = tree.inner();
        let counters = &mut inner.counters;
        let (id, parents, requests) = match level {
            Level::Issues => (
                repo_num(parent),
                &mut counters.issue_parents,
                &mut counters.requests.issues,
            ),
            Level::Comments => (
                parent
                    .parse::<u64>()
                    .ok()
                    .filter(|id| id.to_string() == parent),
                &mut counters.comment_parents,
                &mut counters.requests.comments,
            ),
        };
        *requests += 1;
        if let Some(id) = id {
            parents.insert(id);
        }
        let q = parse_query(query.unwrap_or(""), false);
        let page = id.and_then(|id| {
            let q = q.as_ref().ok()?;
            match level {
                Level::Issues => inner.forest.issues_page(id, q.after, q.limit),
                Level::Comments => inner.forest.comments_page(id, q.after, q.limit),
            }
        });
        match (q, page) {
            (Err(e), _) => return Err(e),
            (Ok(_), Some(page)) => page_body(page, None),
            (Ok(_), None) => {
                let (missing, what) = match level {
                    Level::Issues => (&mut inner.counters.not_found.issues, "repository"),
                    Level::Comments => (&mut inner.counters.not_found.comments, "issue"),
                };
                *missing += 1;
                return Err(ApiError::not_found(format!("no {what} '{parent}'")));
            }
        }
    };
    Ok(answer(state, body))
}

/// `POST /admin/tree/mutate` with a [`Mutation`] (an empty body is all zeros).
async fn mutate(
    Extension(tree): Extension<Arc<Tree>>,
    body: Bytes,
) -> Result<Json<Summary>, ApiError> {
    let m: Mutation = if body.iter().all(u8::is_ascii_whitespace) {
        Mutation::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_body(e.to_string()))?
    };
    let mut inner = tree.inner();
    if inner.forest.creates(&m).is_none_or(|n| n > MAX_RECORDS) {
        return Err(ApiError::bad_body(format!(
            "one mutation may create at most {MAX_RECORDS} records"
        )));
    }
    let summary = inner.forest.mutate(&m);
    drop(inner);
    info!(
        seed = m.seed,
        updated = summary.updated.repos.len()
            + summary.updated.issues.len()
            + summary.updated.comments.len(),
        added =
            summary.added.repos.len() + summary.added.issues.len() + summary.added.comments.len(),
        deleted = summary.deleted.repos.len()
            + summary.deleted.issues.len()
            + summary.deleted.comments.len(),
        "sim tree mutated"
    );
    Ok(Json(summary))
}

/// `GET /admin/tree/truth`.
async fn truth(Extension(tree): Extension<Arc<Tree>>) -> Json<Value> {
    Json(tree.inner().forest.truth())
}

/// `GET /admin/tree/stats`.
async fn stats(Extension(tree): Extension<Arc<Tree>>) -> Json<TreeStats> {
    Json(tree.inner().counters.snapshot())
}

/// `POST /admin/tree/stats/reset`: the counters as they were, then zero.
async fn reset_stats(Extension(tree): Extension<Arc<Tree>>) -> Json<TreeStats> {
    let mut inner = tree.inner();
    let before = inner.counters.snapshot();
    inner.counters = Counters::default();
    Json(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(repos: u32, issues: u32, comments: u32) -> TreeArgs {
        TreeArgs {
            repos,
            issues,
            comments,
        }
    }

    fn times(truth: &Value) -> Vec<String> {
        ["repos", "issues", "comments"]
            .iter()
            .flat_map(|k| truth[k].as_array().unwrap().iter())
            .map(|r| r["updated_at"].as_str().unwrap().to_owned())
            .collect()
    }

    fn find<'a>(truth: &'a Value, kind: &str, id: &Value) -> Option<&'a Value> {
        truth[kind]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| &r["id"] == id)
    }

    /// The mutation a request body asks for (members as in `POST /admin/tree/mutate`).
    fn mutation(body: Value) -> Mutation {
        serde_json::from_value(body).unwrap()
    }

    /// The record `id` of `kind` in two truths, which both hold it.
    fn before_after<'a>(
        before: &'a Value,
        after: &'a Value,
        kind: &str,
        id: &Value,
    ) -> (&'a Value, &'a Value) {
        (
            find(before, kind, id).unwrap(),
            find(after, kind, id).unwrap(),
        )
    }

    /// Every page of one list, following `next_cursor` through the query parser.
    fn walk(
        with_since: bool,
        first_query: &str,
        limit: usize,
        page: impl Fn(&ListQuery) -> Option<Page>,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        let mut query = format!("{first_query}&limit={limit}&unknown=1");
        for _ in 0..10_000 {
            let q = parse_query(&query, with_since).unwrap();
            let since = q.since_ns;
            let p = page(&q).expect("the parent exists");
            assert!(p.data.len() <= limit);
            let body: Value = serde_json::from_slice(&page_body(p, since)).unwrap();
            out.extend(body["data"].as_array().unwrap().iter().cloned());
            match body["next_cursor"].as_str() {
                Some(token) => query = format!("cursor={token}&limit={limit}"),
                None => return out,
            }
        }
        panic!("the pages never end");
    }

    #[test]
    fn a_seed_fixes_the_tree_and_its_mutations() {
        let a = Forest::new(&args(4, 3, 2), 7);
        let b = Forest::new(&args(4, 3, 2), 7);
        assert_eq!(a.truth(), b.truth());
        assert_ne!(a.truth(), Forest::new(&args(4, 3, 2), 8).truth());
        let t = a.truth();
        assert_eq!(
            (
                t["repos"].as_array().unwrap().len(),
                t["issues"].as_array().unwrap().len(),
                t["comments"].as_array().unwrap().len()
            ),
            (4, 12, 24)
        );
        // The exact members, and the first tick after the tree's base instant.
        let first_comment = &t["comments"][0];
        let mut keys: Vec<&str> = first_comment
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["body", "id", "issue_id", "updated_at"]);
        assert_eq!(first_comment["updated_at"], "2026-01-01T00:00:00.001Z");
        assert_eq!(t["repos"][0]["id"], "repo-0001");
        let mut issue_keys: Vec<&str> = t["issues"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        issue_keys.sort_unstable();
        assert_eq!(issue_keys, ["id", "repo", "state", "title", "updated_at"]);
        // Every initial record has its own tick.
        let mut all = times(&t);
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);

        let m = Mutation {
            seed: 3,
            update_repos: 1,
            update_issues: 2,
            add_issues: 1,
            delete_issues: 1,
            update_comments: 2,
            add_comments: 2,
            delete_comments: 1,
            delete_repos: 1,
            add_repos: 1,
            ghost_repos: 1,
        };
        let (mut a, mut b) = (a, b);
        let sa = a.mutate(&m);
        assert_eq!(sa, b.mutate(&m));
        assert_eq!(a.truth(), b.truth());
        let mut other = Forest::new(&args(4, 3, 2), 7);
        let so = other.mutate(&Mutation {
            seed: 4,
            ..m.clone()
        });
        assert_ne!(so, sa, "another mutation seed picks other targets");
    }

    #[test]
    fn a_comment_update_moves_its_issue_and_repo_on() {
        let mut f = Forest::new(&args(3, 3, 2), 1);
        let before = f.truth();
        let latest = times(&before).into_iter().max().unwrap();
        let s = f.mutate(&mutation(json!({"seed": 9, "update_comments": 1})));
        assert_eq!(s.updated.comments.len(), 1);
        assert!(s.added == Ids::default() && s.deleted == Ids::default());
        let after = f.truth();
        let id = Value::from(s.updated.comments[0]);
        let (c0, c1) = before_after(&before, &after, "comments", &id);
        assert_ne!(c0["body"], c1["body"]);
        let issue_id = &c1["issue_id"];
        let (i0, i1) = before_after(&before, &after, "issues", issue_id);
        let repo_id = &i1["repo"];
        let (r0, r1) = before_after(&before, &after, "repos", repo_id);
        let at = |r: &Value| r["updated_at"].as_str().unwrap().to_owned();
        for (old, new) in [(c0, c1), (i0, i1), (r0, r1)] {
            assert!(at(new) > at(old));
            assert!(at(new) > latest, "newer than any earlier tick");
        }
        assert!(at(c1) < at(i1) && at(i1) < at(r1), "children tick first");
        // Nothing else moved.
        let changed: Vec<&Value> = ["repos", "issues", "comments"]
            .iter()
            .flat_map(|k| after[k].as_array().unwrap().iter())
            .filter(|r| !times(&before).contains(&at(r)))
            .collect();
        assert_eq!(changed.len(), 3);

        // An issue update changes its title and moves its repository on; a repository
        // update changes its stars.
        let s = f.mutate(&mutation(
            json!({"seed": 1, "update_issues": 1, "update_repos": 1}),
        ));
        let after2 = f.truth();
        let id = Value::from(s.updated.issues[0]);
        let (i1, i2) = before_after(&after, &after2, "issues", &id);
        assert_ne!(i1["title"], i2["title"]);
        let repo = find(&after2, "repos", &i2["repo"]).unwrap();
        assert!(at(repo) > at(i2));
        let id = Value::from(s.updated.repos[0].as_str());
        assert_ne!(
            find(&after, "repos", &id).unwrap()["stars"],
            find(&after2, "repos", &id).unwrap()["stars"]
        );
    }

    #[test]
    fn deletes_cascade_and_move_ancestors_on() {
        let mut f = Forest::new(&args(3, 2, 2), 5);
        let s = f.mutate(&mutation(json!({"seed": 2, "delete_repos": 1})));
        assert_eq!(
            (
                s.deleted.repos.len(),
                s.deleted.issues.len(),
                s.deleted.comments.len()
            ),
            (1, 2, 4)
        );
        let t = f.truth();
        for id in &s.deleted.issues {
            assert!(find(&t, "issues", &Value::from(*id)).is_none());
            assert!(f.comments_page(*id, None, 10).is_none(), "404");
        }
        for id in &s.deleted.comments {
            assert!(find(&t, "comments", &Value::from(*id)).is_none());
        }
        let gone = repo_num(&s.deleted.repos[0]).unwrap();
        assert!(f.issues_page(gone, None, 10).is_none(), "404");
        assert!(
            t["issues"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["repo"] != s.deleted.repos[0].as_str())
        );

        // Deleting an issue takes its comments and moves its repository on.
        let before = f.truth();
        let s = f.mutate(&mutation(
            json!({"seed": 2, "delete_issues": 1, "delete_comments": 5}),
        ));
        assert_eq!(s.deleted.issues.len(), 1);
        // 8 comments remained; 2 went with the issue, 5 of the other 6 were asked for.
        assert_eq!(s.deleted.comments.len(), 7);
        let t = f.truth();
        assert_eq!(t["comments"].as_array().unwrap().len(), 1);
        let issue = find(&before, "issues", &Value::from(s.deleted.issues[0])).unwrap();
        let repo = &issue["repo"];
        assert!(
            find(&t, "repos", repo).unwrap()["updated_at"].as_str()
                > find(&before, "repos", repo).unwrap()["updated_at"].as_str()
        );
        // Asking for more than live: what is possible.
        let s = f.mutate(&mutation(
            json!({"delete_repos": 10, "update_issues": 3, "add_comments": 2}),
        ));
        assert_eq!(s.deleted.repos.len(), 2);
        assert!(s.updated.issues.is_empty() && s.added.comments.is_empty());
        assert_eq!(
            f.truth(),
            serde_json::json!({"repos": [], "issues": [], "comments": []})
        );
    }

    #[test]
    fn additions_bring_their_children_and_never_reuse_ids() {
        let mut f = Forest::new(&args(2, 2, 1), 11);
        f.mutate(&mutation(json!({"delete_repos": 1})));
        let s = f.mutate(&mutation(
            json!({"seed": 1, "add_repos": 1, "add_issues": 1, "add_comments": 1}),
        ));
        assert_eq!(s.added.repos, vec!["repo-0003".to_owned()]);
        // Two issues with the repository, one alone; a comment each, and one more.
        assert_eq!(s.added.issues, vec![5, 6, 7]);
        assert_eq!(s.added.comments, vec![5, 6, 7, 8]);
        let t = f.truth();
        let mut all = times(&t);
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "no two records share a tick");
        for repo in t["repos"].as_array().unwrap() {
            for issue in t["issues"].as_array().unwrap() {
                if issue["repo"] == repo["id"] {
                    assert!(repo["updated_at"].as_str() > issue["updated_at"].as_str());
                }
            }
        }
    }

    #[test]
    fn a_ghost_is_listed_while_its_issues_are_gone() {
        let mut f = Forest::new(&args(3, 2, 2), 5);
        let s = f.mutate(&mutation(json!({"ghost_repos": 1, "add_issues": 5})));
        assert_eq!(s.ghosted.repos.len(), 1);
        let ghost = repo_num(&s.ghosted.repos[0]).unwrap();
        assert_eq!(s.deleted.issues.len(), 2);
        assert_eq!(s.deleted.comments.len(), 4);
        assert!(f.repo_json(ghost).is_some(), "still listed");
        assert!(
            f.issues_page(ghost, None, 100).is_none(),
            "its issues answer 404"
        );
        let truth = f.truth();
        assert!(
            truth["issues"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["repo"] != s.ghosted.repos[0].as_str()),
            "no issue was added to the ghost"
        );
    }

    #[test]
    fn pages_cover_every_record_once() {
        let mut f = Forest::new(&args(7, 5, 4), 3);
        f.mutate(&mutation(
            json!({"seed": 1, "delete_issues": 3, "delete_comments": 4}),
        ));
        let t = f.truth();
        for limit in [1, 2, 3, 7, 1000] {
            let repos = walk(true, "", limit, |q| {
                Some(f.repos_page(q.since_ns, q.after, q.limit))
            });
            assert_eq!(Value::from(repos), t["repos"]);
            let mut issues = Vec::new();
            let mut comments = Vec::new();
            for repo in t["repos"].as_array().unwrap() {
                let num = repo_num(repo["id"].as_str().unwrap()).unwrap();
                issues.extend(walk(false, "", limit, |q| {
                    f.issues_page(num, q.after, q.limit)
                }));
            }
            for issue in &issues {
                let id = issue["id"].as_u64().unwrap();
                comments.extend(walk(false, "", limit, |q| {
                    f.comments_page(id, q.after, q.limit)
                }));
            }
            assert_eq!(Value::from(issues), t["issues"]);
            assert_eq!(Value::from(comments), t["comments"]);
        }
        // `since` holds across pages (the cursor carries it).
        let since = t["repos"][3]["updated_at"].as_str().unwrap().to_owned();
        let want: Vec<Value> = t["repos"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["updated_at"].as_str().unwrap() >= since.as_str())
            .cloned()
            .collect();
        let got = walk(true, &format!("since={since}"), 1, |q| {
            Some(f.repos_page(q.since_ns, q.after, q.limit))
        });
        assert_eq!(got, want);
        assert!(!want.is_empty() && want.len() < 7);
    }

    #[test]
    fn bad_parameters_are_400s() {
        for bad in ["cursor=zz", "cursor=00", "limit=0", "limit=1001", "limit=x"] {
            let e = parse_query(bad, true).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(
            parse_query("since=yesterday", true).unwrap_err().code,
            "invalid_parameter"
        );
        assert_eq!(
            parse_query("cursor=zz", true).unwrap_err().code,
            "invalid_cursor"
        );
        // A cursor issued under `since` is not one a child list issued.
        let token = encode_cursor(Some(5), 3);
        assert!(parse_query(&format!("cursor={token}"), false).is_err());
        assert!(parse_query(&format!("cursor={token}&since=2026-01-01T00:00:00Z"), true).is_err());
        let q = parse_query(&format!("cursor={token}&foo=bar&since="), true).unwrap();
        assert_eq!(
            q,
            ListQuery {
                after: Some(3),
                since_ns: Some(5),
                limit: DEFAULT_LIMIT
            }
        );
        assert_eq!(repo_num("repo-0042"), Some(42));
        assert_eq!(repo_num("repo-42"), None);
        assert_eq!(repo_num("repo-12345"), Some(12_345));
        assert_eq!(repo_num("nope"), None);
    }

    /// Sends `request`, checks the answer's status and answers it.
    async fn answered(request: reqwest::RequestBuilder, status: u16) -> reqwest::Response {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status);
        r
    }

    /// The JSON body of a request's answer.
    async fn json_of(request: reqwest::RequestBuilder) -> Value {
        request.send().await.unwrap().json().await.unwrap()
    }

    #[tokio::test]
    async fn served_behind_the_guard_with_stats() {
        let sim_args = crate::sim::SimArgs::try_parse_from([
            "sim",
            "--records",
            "5",
            "--write-rate",
            "0",
            "--tree-repos",
            "2",
            "--tree-issues",
            "2",
            "--tree-comments",
            "1",
        ])
        .unwrap();
        let sim = crate::sim::spawn(sim_args).await.unwrap();
        let http = reqwest::Client::new();
        let get = |path: &str, auth: bool| {
            let r = http.get(sim.url(path));
            if auth { r.bearer_auth("demo") } else { r }
        };
        answered(get("/v1/tree/repos", false), 401).await;
        let r = answered(get("/v1/tree/repos?limit=1", true), 200).await;
        assert!(r.headers().contains_key("x-ratelimit-remaining"));
        let page: Value = r.json().await.unwrap();
        assert_eq!(page["data"][0]["id"], "repo-0001");
        let token = page["next_cursor"].as_str().unwrap().to_owned();
        let page = json_of(get(&format!("/v1/tree/repos?limit=1&cursor={token}"), true)).await;
        assert_eq!(page["data"][0]["id"], "repo-0002");
        assert_eq!(page["next_cursor"], Value::Null);
        let r = answered(get("/v1/tree/repos?cursor=nothex", true), 400).await;
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_cursor");

        let page = json_of(get("/v1/tree/repos/repo-0001/issues", true)).await;
        assert_eq!(page["data"].as_array().unwrap().len(), 2);
        let issue = page["data"][0]["id"].as_u64().unwrap();
        answered(get(&format!("/v1/tree/issues/{issue}/comments"), true), 200).await;

        let truth = json_of(http.get(sim.url("/admin/tree/truth"))).await;
        assert_eq!(truth["comments"].as_array().unwrap().len(), 4);
        let summary = json_of(
            http.post(sim.url("/admin/tree/mutate"))
                .body(r#"{"seed": 1, "delete_repos": 2}"#),
        )
        .await;
        assert_eq!(
            summary["deleted"]["repos"],
            serde_json::json!(["repo-0001", "repo-0002"])
        );
        let r = answered(get("/v1/tree/repos/repo-0001/issues", true), 404).await;
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "not_found");
        answered(get(&format!("/v1/tree/issues/{issue}/comments"), true), 404).await;
        let r = http
            .post(sim.url("/admin/tree/mutate"))
            .body(r#"{"add_repo": 1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "unknown members are refused");

        let stats = json_of(http.get(sim.url("/admin/tree/stats"))).await;
        assert_eq!(
            stats,
            serde_json::json!({
                "requests": {"repos": 3, "issues": 2, "comments": 2},
                "not_found": {"issues": 1, "comments": 1},
                "issue_parents": 1,
                "comment_parents": 1,
            })
        );
        let r = http
            .post(sim.url("/admin/tree/stats/reset"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap(), stats);
        let stats = json_of(http.get(sim.url("/admin/tree/stats"))).await;
        assert_eq!(stats["requests"]["repos"], 0);
        assert_eq!(stats["issue_parents"], 0);
        sim.stop().await.unwrap();
    }
}
