//! Shared set-up of the end-to-end tests: the whole suite, started in-process exactly as
//! `custops dev` starts it — each service pointed at the others, so feeds, rewards, segment
//! targeting, Customer 360 and the export all run for real — against a database of the test's
//! own; typed clients; and the fixture of a customer known to all four services.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::feedback::v1 as feedback;
use custops_contracts::custops::feedback::v1::feedback_service_client::FeedbackServiceClient;
use custops_contracts::custops::loyalty::v1 as loyalty;
use custops_contracts::custops::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use custops_contracts::custops::profiles::v1 as profiles;
use custops_contracts::custops::profiles::v1::profiles_service_client::ProfilesServiceClient;
use custops_contracts::custops::segmentation::v1 as segmentation;
use custops_contracts::custops::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use custops_suite::dev::{self, RunningSuite};
use custops_testkit::TestDatabase;
use sqlx::Connection;
use tonic::transport::Channel;

/// Connections a replica's pool (and a suite's behind PgBouncer) may open: the tests of one
/// `cargo test` share one Postgres and its `max_connections` (100 by default), and a test
/// with two replicas of four services would otherwise be allowed 80 of them.
pub const REPLICA_POOL_SIZE: u32 = 5;

/// How long a test waits for a change to travel through the feeds.
pub const PROPAGATION: Duration = Duration::from_secs(30);

/// The four services running for one test. Dropping it without [`TestSuite::stop`] leaves the
/// servers to die with the test's runtime.
#[derive(Debug)]
pub struct TestSuite {
    /// The running services.
    pub services: RunningSuite,
    /// The test's database; dropped (and deleted) after the services.
    pub database: TestDatabase,
    /// The services' own Postgres roles, when they run as them; dropped after the database
    /// that holds their grants.
    pub roles: Option<custops_testkit::roles::TestRoles>,
    /// The PgBouncer the services' requests go through, when they do
    /// ([`TestSuite::start_behind_pgbouncer`]).
    pub pooler: Option<custops_testkit::pgbouncer::TestPgBouncer>,
    /// The databases of the services that have one of their own (`CUSTOPS_<SVC>_DATABASE_URL`);
    /// the others' is `database`.
    pub own_databases: Vec<(ServiceKind, TestDatabase)>,
}

/// How the services of a test suite reach Postgres.
enum Connect<'a> {
    /// As the test database's admin, migrating on start (as `custops dev` does).
    AsAdmin,
    /// Through a transaction-pooling PgBouncer (one alias per service), with the direct URL of
    /// the service's database (`own`, else the suite's) for LISTEN and migrations.
    ThroughPooler {
        pooler: &'a custops_testkit::pgbouncer::TestPgBouncer,
        own: &'a [(ServiceKind, TestDatabase)],
    },
    /// Each as its own least-privilege role, `<prefix>_<schema>` with password `pw-<schema>`,
    /// after the admin migrated every schema and set the roles up (as production does).
    AsRoles { prefix: &'a str },
}

impl TestSuite {
    /// Starts all four services on free loopback ports against a fresh database, each with
    /// the others' URLs, as `custops dev` wires them.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_adjusted(|_| {}).await
    }

    /// [`TestSuite::start`], with each service's settings first passed to `adjust` (a Redis of
    /// the test's own, a smaller pool or call budget).
    pub async fn start_adjusted(adjust: impl Fn(&mut ServiceSettings)) -> anyhow::Result<Self> {
        let database = TestDatabase::create().await?;
        let services = Self::start_services(&database, &Connect::AsAdmin, &adjust).await?;
        Ok(Self {
            services,
            database,
            roles: None,
            pooler: None,
            own_databases: Vec::new(),
        })
    }

    /// [`TestSuite::start`], with every service's requests going through a PgBouncer of the
    /// test's own in transaction pooling mode (`DATABASE_URL` the pooler's alias for the
    /// service, `DATABASE_DIRECT_URL` the database), as a production behind PgBouncer runs.
    /// With `own_databases`, each service has a database of its own
    /// (`CUSTOPS_<SVC>_DATABASE_URL`), so nothing can lean on another service's tables.
    pub async fn start_behind_pgbouncer(own_databases: bool) -> anyhow::Result<Self> {
        let database = TestDatabase::create().await?;
        let mut own = Vec::new();
        if own_databases {
            for service in ServiceKind::ALL {
                own.push((service, TestDatabase::create().await?));
            }
        }
        let defaults =
            custops_common::config::DatabaseSettings::new(ServiceKind::Profiles, database.url());
        let statement_timeout = defaults.statement_timeout.as_millis().to_string();
        let lock_timeout = defaults.lock_timeout.as_millis().to_string();
        let aliases: Vec<(&str, &str)> = ServiceKind::ALL
            .iter()
            .map(|service| {
                (
                    service.schema(),
                    database_of(&database, &own, *service).url(),
                )
            })
            .collect();
        let pooler = custops_testkit::pgbouncer::TestPgBouncer::start(
            &aliases,
            &[
                ("statement_timeout", statement_timeout.as_str()),
                ("lock_timeout", lock_timeout.as_str()),
            ],
        )
        .await?;
        let connect = Connect::ThroughPooler {
            pooler: &pooler,
            own: &own,
        };
        let services = Self::start_services(&database, &connect, &|settings| {
            settings.database.max_connections = REPLICA_POOL_SIZE;
        })
        .await?;
        Ok(Self {
            services,
            database,
            roles: None,
            pooler: Some(pooler),
            own_databases: own,
        })
    }

    /// The database `service` keeps its data in.
    pub fn database_of(&self, service: ServiceKind) -> &TestDatabase {
        database_of(&self.database, &self.own_databases, service)
    }

    /// [`TestSuite::start`], but the admin migrates and sets up each service's role
    /// (`custops migrate --create-roles`), and each service then connects as its own role
    /// with `CUSTOPS_MIGRATE_ON_START=false`, as in production: whatever the services do must
    /// be within the privileges their roles hold.
    pub async fn start_as_roles() -> anyhow::Result<Self> {
        use custops_common::config::DatabaseSettings;
        let roles = custops_testkit::roles::TestRoles::new();
        let database = TestDatabase::create().await?;
        let targets: Vec<_> = ServiceKind::ALL
            .into_iter()
            .map(|service| (service, DatabaseSettings::new(service, database.url())))
            .collect();
        let options = custops_suite::migrate::RoleOptions {
            prefix: roles.prefix().to_owned(),
            passwords: ServiceKind::ALL
                .into_iter()
                .map(|service| {
                    let password = format!("pw-{}", service.schema());
                    (service, secrecy::SecretString::from(password))
                })
                .collect(),
        };
        custops_suite::migrate::run_with_roles(&targets, Some(&options)).await?;
        let prefix = roles.prefix().to_owned();
        let services =
            Self::start_services(&database, &Connect::AsRoles { prefix: &prefix }, &|_| {}).await?;
        // The services' connections are their roles', not the admin's.
        let mut admin = sqlx::PgConnection::connect(database.url()).await?;
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT usename::text FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name LIKE 'custops-%'",
        )
        .fetch_all(&mut admin)
        .await?;
        anyhow::ensure!(
            !users.is_empty() && users.iter().all(|user| user.starts_with(&prefix)),
            "the services connected as {users:?}"
        );
        Ok(Self {
            services,
            database,
            roles: Some(roles),
            pooler: None,
            own_databases: Vec::new(),
        })
    }

    async fn start_services(
        database: &TestDatabase,
        connect: &Connect<'_>,
        adjust: &dyn Fn(&mut ServiceSettings),
    ) -> anyhow::Result<RunningSuite> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_on_free_ports(database, connect, adjust).await {
                Ok(services) => return Ok(services),
                Err(error) if attempt < 3 && format!("{error:#}").contains("could not bind") => {
                    tracing::warn!(error = format!("{error:#}"), "a port was taken; again");
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn start_on_free_ports(
        database: &TestDatabase,
        connect: &Connect<'_>,
        adjust: &dyn Fn(&mut ServiceSettings),
    ) -> anyhow::Result<RunningSuite> {
        let role_url = |service: ServiceKind, prefix: &str| -> anyhow::Result<String> {
            let mut url = url::Url::parse(database.url())?;
            let schema = service.schema();
            url.set_username(&format!("{prefix}_{schema}"))
                .map_err(|()| anyhow::anyhow!("the database URL takes no user"))?;
            url.set_password(Some(&format!("pw-{schema}")))
                .map_err(|()| anyhow::anyhow!("the database URL takes no password"))?;
            Ok(url.to_string())
        };
        let mut settings = Vec::new();
        for service in &ServiceKind::ALL {
            let mut service_settings = match connect {
                Connect::AsAdmin => ServiceSettings::for_local(*service, database.url()),
                Connect::AsRoles { prefix } => {
                    let mut settings =
                        ServiceSettings::for_local(*service, &role_url(*service, prefix)?);
                    settings.migrate_on_start = false;
                    settings
                }
                Connect::ThroughPooler { pooler, own } => {
                    let direct = database_of(database, own, *service).url();
                    let mut settings = ServiceSettings::for_local(
                        *service,
                        &pooler.url(service.schema(), url::Url::parse(direct)?.username()),
                    );
                    settings.database.direct_url =
                        Some(secrecy::SecretString::from(direct.to_owned()));
                    settings
                }
            };
            // Port 0: `wire_peers` picks free ports, then tells each service the others'.
            service_settings.server.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
            adjust(&mut service_settings);
            settings.push(service_settings);
        }
        // Peers wired exactly as `custops dev` wires them.
        dev::wire_peers(&mut settings)?;
        dev::start(settings).await
    }

    /// A second replica of each of the four services, on this suite's database (wired to each
    /// other as the first ones are: its consumers follow its own producers' feeds, which read
    /// the same outboxes), with pools of [`REPLICA_POOL_SIZE`]. Stop it before the suite: the
    /// suite's drop deletes the database.
    pub async fn start_replica(&self) -> anyhow::Result<RunningSuite> {
        let connect = match &self.pooler {
            Some(pooler) => Connect::ThroughPooler {
                pooler,
                own: &self.own_databases,
            },
            None => Connect::AsAdmin,
        };
        Self::start_services(&self.database, &connect, &|settings| {
            settings.database.max_connections = REPLICA_POOL_SIZE;
        })
        .await
    }

    /// Where `service` listens.
    pub fn addr(&self, service: ServiceKind) -> anyhow::Result<SocketAddr> {
        address(&self.services, service)
    }

    /// A plaintext channel to `service`.
    pub async fn channel(&self, service: ServiceKind) -> anyhow::Result<Channel> {
        channel(&self.services, service).await
    }

    /// Typed clients of the four services.
    pub async fn clients(&self) -> anyhow::Result<Clients> {
        clients(&self.services).await
    }

    /// Drains every service, then drops the database.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.services.stop().await
    }
}

/// The database `service` keeps its data in: its own when it has one, else `shared`.
fn database_of<'a>(
    shared: &'a TestDatabase,
    own: &'a [(ServiceKind, TestDatabase)],
    service: ServiceKind,
) -> &'a TestDatabase {
    own.iter()
        .find(|(s, _)| *s == service)
        .map_or(shared, |(_, database)| database)
}

/// Where `service` of `services` listens.
pub fn address(services: &RunningSuite, service: ServiceKind) -> anyhow::Result<SocketAddr> {
    services
        .addr(service)
        .with_context(|| format!("{service} is not running"))
}

/// A plaintext channel to `service` of `services`.
pub async fn channel(services: &RunningSuite, service: ServiceKind) -> anyhow::Result<Channel> {
    let addr = address(services, service)?;
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("Failed to connect to {service} at {addr}"))
}

/// Typed clients of the four services of `services`.
pub async fn clients(services: &RunningSuite) -> anyhow::Result<Clients> {
    Ok(Clients {
        profiles: ProfilesServiceClient::new(channel(services, ServiceKind::Profiles).await?),
        segmentation: SegmentationServiceClient::new(
            channel(services, ServiceKind::Segmentation).await?,
        ),
        loyalty: LoyaltyServiceClient::new(channel(services, ServiceKind::Loyalty).await?),
        feedback: FeedbackServiceClient::new(channel(services, ServiceKind::Feedback).await?),
    })
}

/// A client of each service.
#[derive(Debug, Clone)]
pub struct Clients {
    /// custops.profiles.v1.ProfilesService
    pub profiles: ProfilesServiceClient<Channel>,
    /// custops.segmentation.v1.SegmentationService
    pub segmentation: SegmentationServiceClient<Channel>,
    /// custops.loyalty.v1.LoyaltyService
    pub loyalty: LoyaltyServiceClient<Channel>,
    /// custops.feedback.v1.FeedbackService
    pub feedback: FeedbackServiceClient<Channel>,
}

/// Polls `check` until it answers `Ok(true)` or `timeout` passes; whether it did. (The
/// testkit's polling, for checks that make calls which may fail.)
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    custops_testkit::eventually(timeout, || {
        let checked = check();
        async move { matches!(checked.await, Ok(true)) }
    })
    .await
}

/// The time `hours` ago.
pub fn hours_ago(hours: u64) -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::now() - Duration::from_secs(hours * 3600))
}

/// A fresh idempotency key.
pub fn rid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// What the suite-wide objects of a test are: one loyalty program, one NPS survey, one
/// static segment.
#[derive(Debug, Clone)]
pub struct World {
    /// A loyalty program (CNY, 1 point per yuan, tiers Member and Silver at 100 points).
    pub program_id: String,
    /// An active NPS survey about orders.
    pub survey_id: String,
    /// A static segment.
    pub static_segment_id: String,
    /// A rule segment: customers with at least one purchase.
    pub buyers_segment_id: String,
}

/// What a customer left in every service (see [`Clients::leave_traces`]).
#[derive(Debug, Clone, Default)]
pub struct Traces {
    /// The profiles customer.
    pub customer_id: String,
    /// Their loyalty member.
    pub member_id: String,
    /// Their survey response (an NPS detractor: it opened a follow-up ticket).
    pub response_id: String,
    /// The complaint ticket they opened.
    pub ticket_id: String,
    /// Their product review.
    pub review_id: String,
}

impl Clients {
    /// Creates the program, survey and segments a test's customers use.
    pub async fn world(&mut self) -> anyhow::Result<World> {
        let program = self
            .loyalty
            .create_program(loyalty::CreateProgramRequest {
                request_id: rid(),
                program: Some(loyalty::Program {
                    display_name: "Acme Rewards".to_owned(),
                    currency: "CNY".to_owned(),
                    clawback_policy: loyalty::ClawbackPolicy::WithinBalance as i32,
                    earning_rules: Some(loyalty::EarningRules {
                        base_rate: Some(loyalty::EarnRate {
                            points: 1,
                            per_amount_minor: 100,
                        }),
                        rounding_mode: loyalty::RoundingMode::Down as i32,
                        ..Default::default()
                    }),
                    tiers: vec![
                        loyalty::Tier {
                            tier_code: "member".to_owned(),
                            display_name: "Member".to_owned(),
                            ..Default::default()
                        },
                        loyalty::Tier {
                            tier_code: "silver".to_owned(),
                            display_name: "Silver".to_owned(),
                            threshold: Some(loyalty::QualifyingAmount {
                                amount: Some(loyalty::qualifying_amount::Amount::QualifyingPoints(
                                    100,
                                )),
                            }),
                            ..Default::default()
                        },
                    ],
                    tier_policy: Some(loyalty::TierPolicy {
                        qualifying_window_days: 365,
                        review_schedule: loyalty::TierReviewSchedule::Anniversary as i32,
                        review_period_months: 12,
                        grace_period_days: 30,
                        downgrade_mode: loyalty::TierDowngradeMode::ToQualifiedTier as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .program
            .context("no program")?;
        let survey_id = self.nps_survey("After delivery", None).await?;
        let static_segment = self
            .segmentation
            .create_segment(segmentation::CreateSegmentRequest {
                segment: Some(segmentation::Segment {
                    display_name: "VIP list".to_owned(),
                    kind: segmentation::SegmentKind::Static as i32,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .segment
            .context("no static segment")?;
        let buyers_segment_id = self.buyers_segment("Buyers").await?;
        Ok(World {
            program_id: program.program_id,
            survey_id,
            static_segment_id: static_segment.segment_id,
            buyers_segment_id,
        })
    }

    /// Creates and activates a one-question NPS survey about orders, paying `reward` for each
    /// answer when given; its id.
    pub async fn nps_survey(
        &mut self,
        display_name: &str,
        reward: Option<feedback::SurveyReward>,
    ) -> anyhow::Result<String> {
        let survey = self
            .feedback
            .create_survey(feedback::CreateSurveyRequest {
                survey: Some(feedback::Survey {
                    display_name: display_name.to_owned(),
                    questions: vec![feedback::Question {
                        question_id: "nps".to_owned(),
                        text: "How likely are you to recommend us?".to_owned(),
                        kind: feedback::QuestionKind::Nps as i32,
                        required: true,
                        ..Default::default()
                    }],
                    target: Some(feedback::SurveyTarget {
                        touchpoint_kind: feedback::TouchpointKind::Order as i32,
                        segment_id: String::new(),
                    }),
                    reward,
                    ..Default::default()
                }),
                request_id: rid(),
            })
            .await?
            .into_inner()
            .survey
            .context("no survey")?;
        self.feedback
            .activate_survey(feedback::ActivateSurveyRequest {
                survey_id: survey.survey_id.clone(),
                etag: String::new(),
            })
            .await?;
        Ok(survey.survey_id)
    }

    /// Creates a rule segment of the customers with at least one purchase (empty until an
    /// event or a recompute puts someone in); its id.
    pub async fn buyers_segment(&mut self, display_name: &str) -> anyhow::Result<String> {
        let segment = self
            .segmentation
            .create_segment(segmentation::CreateSegmentRequest {
                segment: Some(segmentation::Segment {
                    display_name: display_name.to_owned(),
                    kind: segmentation::SegmentKind::Rule as i32,
                    rule: Some(segmentation::Condition {
                        kind: Some(segmentation::condition::Kind::Predicate(
                            segmentation::Predicate {
                                field: "purchase.count".to_owned(),
                                operator: segmentation::Operator::GreaterOrEqual as i32,
                                values: vec![segmentation::Value {
                                    kind: Some(segmentation::value::Kind::IntegerValue(1)),
                                }],
                                ..Default::default()
                            },
                        )),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .segment
            .context("no rule segment")?;
        Ok(segment.segment_id)
    }

    /// `customer_id` answers `survey_id`'s NPS question with `score`, through an invitation
    /// about the order `order_id`; the response.
    pub async fn answer_nps(
        &mut self,
        survey_id: &str,
        customer_id: &str,
        order_id: &str,
        score: i32,
    ) -> anyhow::Result<feedback::SurveyResponse> {
        let invitation = self
            .feedback
            .create_invitation(feedback::CreateInvitationRequest {
                invitation: Some(feedback::Invitation {
                    survey_id: survey_id.to_owned(),
                    customer_id: customer_id.to_owned(),
                    touchpoint: Some(feedback::TouchpointRef {
                        kind: feedback::TouchpointKind::Order as i32,
                        touchpoint_id: order_id.to_owned(),
                    }),
                    channel: "email".to_owned(),
                    ..Default::default()
                }),
                request_id: rid(),
            })
            .await?
            .into_inner()
            .invitation
            .context("no invitation")?;
        self.feedback
            .submit_response(feedback::SubmitResponseRequest {
                invitation_id: invitation.invitation_id,
                answers: vec![feedback::Answer {
                    question_id: "nps".to_owned(),
                    value: Some(feedback::answer::Value::Score(score)),
                }],
                channel: String::new(),
                request_id: rid(),
            })
            .await?
            .into_inner()
            .survey_response
            .context("no response")
    }

    /// Creates a customer in profiles (e-mail `email`).
    pub async fn create_customer(&mut self, email: &str) -> anyhow::Result<String> {
        let customer = self
            .profiles
            .create_customer(profiles::CreateCustomerRequest {
                customer: Some(profiles::Customer {
                    given_name: "Wei".to_owned(),
                    family_name: "Li".to_owned(),
                    identities: vec![profiles::Identity {
                        identity_type: profiles::IdentityType::Email as i32,
                        value: email.to_owned(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .customer
            .context("no customer")?;
        Ok(customer.customer_id)
    }

    /// Gives `customer_id` data in every service: a purchase (profiles, hence segmentation's
    /// facts and the Buyers segment), the static segment, a loyalty membership with points
    /// from that purchase, an NPS detractor answer (and its follow-up ticket), a complaint
    /// ticket and a review.
    pub async fn leave_traces(
        &mut self,
        world: &World,
        customer_id: &str,
        tag: &str,
    ) -> anyhow::Result<Traces> {
        self.profiles
            .record_activity(profiles::RecordActivityRequest {
                activity: Some(profiles::Activity {
                    customer_id: customer_id.to_owned(),
                    source: "order_service".to_owned(),
                    event_id: format!("order-{tag}"),
                    occur_time: Some(hours_ago(1)),
                    channel: "web".to_owned(),
                    details: Some(profiles::activity::Details::Purchase(profiles::Purchase {
                        order_id: format!("order-{tag}"),
                        amount: Some(common::Money {
                            amount_minor: 15_000,
                            currency: "CNY".to_owned(),
                        }),
                        categories: vec!["shoes".to_owned()],
                        item_count: 1,
                    })),
                    ..Default::default()
                }),
                customer_identity: None,
            })
            .await?;
        let member = self
            .loyalty
            .enrol_member(loyalty::EnrolMemberRequest {
                request_id: rid(),
                program_id: world.program_id.clone(),
                customer_id: customer_id.to_owned(),
                enrol_channel: "app".to_owned(),
            })
            .await?
            .into_inner()
            .member
            .context("no member")?;
        self.loyalty
            .earn_points(loyalty::EarnPointsRequest {
                request_id: rid(),
                member: Some(loyalty::MemberRef {
                    key: Some(loyalty::member_ref::Key::MemberId(member.member_id.clone())),
                }),
                source: Some(loyalty::earn_points_request::Source::Purchase(
                    loyalty::Purchase {
                        order_id: format!("order-{tag}"),
                        amount: Some(common::Money {
                            amount_minor: 15_000,
                            currency: "CNY".to_owned(),
                        }),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            })
            .await?;
        let response = self
            .answer_nps(&world.survey_id, customer_id, &format!("order-{tag}"), 3)
            .await?;
        let ticket = self
            .feedback
            .open_ticket(feedback::OpenTicketRequest {
                customer_id: customer_id.to_owned(),
                category: "delivery".to_owned(),
                severity: feedback::TicketSeverity::Medium as i32,
                channel: "phone".to_owned(),
                subject: "Parcel arrived damaged".to_owned(),
                request_id: rid(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .ticket
            .context("no ticket")?;
        let review = self
            .feedback
            .create_review(feedback::CreateReviewRequest {
                review: Some(feedback::Review {
                    customer_id: customer_id.to_owned(),
                    subject: Some(feedback::ReviewSubject {
                        kind: feedback::ReviewSubjectKind::Product as i32,
                        subject_id: "sku-1".to_owned(),
                    }),
                    rating: 2,
                    text: "Too small".to_owned(),
                    ..Default::default()
                }),
                request_id: rid(),
            })
            .await?
            .into_inner()
            .review
            .context("no review")?;
        // Segmentation learns of the customer from the profiles feed; a static upload of an id
        // it does not know yet is skipped, so wait for its facts first.
        let known = eventually(PROPAGATION, || {
            let mut client = self.segmentation.clone();
            let id = customer_id.to_owned();
            async move {
                Ok(client
                    .get_customer_facts(segmentation::GetCustomerFactsRequest { customer_id: id })
                    .await
                    .is_ok())
            }
        })
        .await;
        anyhow::ensure!(known, "segmentation never learnt of {customer_id}");
        self.segmentation
            .upload_static_members(tokio_stream::iter([
                segmentation::UploadStaticMembersRequest {
                    segment_id: world.static_segment_id.clone(),
                    mode: segmentation::StaticUploadMode::Add as i32,
                    request_id: rid(),
                    customer_ids: vec![customer_id.to_owned()],
                },
            ]))
            .await?;
        Ok(Traces {
            customer_id: customer_id.to_owned(),
            member_id: member.member_id,
            response_id: response.response_id,
            ticket_id: ticket.ticket_id,
            review_id: review.review_id,
        })
    }

    /// The segments `customer_id` is in (ids).
    pub async fn segments_of(&mut self, customer_id: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .segmentation
            .list_customer_segments(segmentation::ListCustomerSegmentsRequest {
                customer_id: customer_id.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .segment_ids)
    }

    /// The whole export of `customer_id`, through profiles.
    pub async fn export(&mut self, customer_id: &str) -> anyhow::Result<profiles::CustomerExport> {
        self.profiles
            .clone()
            .max_decoding_message_size(8 * 1024 * 1024)
            .export_customer(profiles::ExportCustomerRequest {
                customer_id: customer_id.to_owned(),
                section_timeout: None,
            })
            .await?
            .into_inner()
            .customer_export
            .context("no export")
    }
}
