//! The r2r binding (cargo feature `ros2`): the node logic of this module's siblings on real
//! ROS 2 topics. The only module that imports r2r.
//!
//! Every executable is the in-process graph ([`Graph`]) of the nodes it hosts plus a bridge:
//! `detector_node`, `feature_node`, `temporal_node` and `alert_node` host one node each,
//! `stars_node` hosts all four with one copy of the backbone (r2r has no ROS composition, so
//! this is our own). Topics a hosted node subscribes to and no hosted node publishes come from
//! DDS; everything a hosted node publishes goes to DDS and, inside `stars_node`, straight to
//! the hosted subscribers too. Each hosted node is its own r2r node, so names, parameters,
//! `ros2 param` and the params file's keys are the same in both forms.
//!
//! Messages cross as CDR bytes (`subscribe_raw`, `publish_raw`) encoded and decoded by
//! [`crate::msg`], the codec the bags use (checked against `rosbags` and, in this module's
//! tests, against r2r's own typesupport), so there is one conversion and no field copying.
//!
//! Drop policy: r2r queues 10 messages per subscription and drops the newest when full, so a
//! task drains each subscription at once into the graph's bounded queues (`queue_depth`,
//! oldest dropped and counted): a slow node works on the newest frame and its output age stays
//! within about one inference period.
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use r2r::{ParameterValue, QosProfile, RosParams};

use super::alert::{AlertNode, AlertParams};
use super::detector::{DetectorNode, DetectorParams};
use super::feature::{FeatureNode, FeatureParams};
use super::health::{Health, WatchdogClock};
use super::inproc::Graph;
use super::stages::ModelSources;
use super::temporal::{TemporalNode, TemporalParams};
use super::{topics, Msg, Node, Publication};
use crate::model::flowclas::backbone::{FeatureExtractor, RANDOM_BACKBONE_LABEL};
use crate::msg::{Bool, DiagnosticArray, Header, Image, Message, Time};

/// Namespace of the nodes unless the command line (`-r __ns:=...`) or a launch file says.
pub const DEFAULT_NAMESPACE: &str = "/stars";
/// Input-clock tick period of the watchdogs (as `stars run` ticks replay).
const TICK: Duration = Duration::from_millis(50);
/// Health diagnostics period.
const HEALTH_PERIOD: Duration = Duration::from_secs(1);
/// History depth of every reliable subscription and publisher but the latched alert.
const RELIABLE_DEPTH: usize = 10;

/// A node an executable hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `feature_node`: DINOv2 patch features for STARS.
    Feature,
    /// `detector_node`: FlowCLAS anomaly maps.
    Detector,
    /// `temporal_node`: the temporal method over stamp-matched maps and features.
    Temporal,
    /// `alert_node`: the arm controller's alert.
    Alert,
}

impl Role {
    /// All four, in graph order (what `stars_node` hosts).
    pub const ALL: [Role; 4] = [Role::Feature, Role::Detector, Role::Temporal, Role::Alert];

    /// The ROS node name (and key of its section in `config/stars.yaml`).
    pub fn node_name(self) -> &'static str {
        match self {
            Role::Feature => "feature_node",
            Role::Detector => "detector_node",
            Role::Temporal => "temporal_node",
            Role::Alert => "alert_node",
        }
    }

    /// The task name of its health status (`node: task`).
    fn task(self) -> &'static str {
        match self {
            Role::Feature => "features",
            Role::Detector => "detection",
            Role::Temporal => "refinement",
            Role::Alert => "alerting",
        }
    }
}

/// The ROS name of a contract topic: relative (so a namespace and remapping apply), the
/// camera as `image`, `/diagnostics` absolute as every ROS tool expects it.
pub fn ros_name(topic: &str) -> String {
    match topic {
        topics::CAMERA => "image".into(),
        topics::DIAGNOSTICS => topic.into(),
        other => other.strip_prefix("/stars/").unwrap_or(other).into(),
    }
}

/// The message type carried on a contract topic.
fn type_name(topic: &str) -> &'static str {
    match topic {
        topics::ALERT_ACTIVE => Bool::TYPE.name,
        topics::ALERT_STATUS | topics::DIAGNOSTICS => DiagnosticArray::TYPE.name,
        _ => Image::TYPE.name,
    }
}

/// Output QoS (REP-2003): reliable, the alert flag also transient local so a controller that
/// starts late reads the current state.
fn output_qos(topic: &str) -> QosProfile {
    let qos = QosProfile::default()
        .reliable()
        .volatile()
        .keep_last(RELIABLE_DEPTH);
    match topic {
        topics::ALERT_ACTIVE => qos.transient_local().keep_last(1),
        _ => qos,
    }
}

// ---------------------------------------------------------------------------------------------
// Parameters

/// Where a model node's backbone (and the detector naming it) comes from.
#[derive(RosParams, Clone, Debug, PartialEq)]
pub struct BackboneSource {
    /// Detector checkpoint directory (`stars train detector`); it names the backbone.
    pub detector: String,
    /// DINOv2 weights (.safetensors) matching the detector's backbone.
    pub backbone_weights: String,
    /// Use the random placeholder backbone instead (outputs labelled PLACEHOLDER).
    pub random_weights: bool,
    /// Where inference runs: cpu or cuda:N.
    pub device: String,
}

impl Default for BackboneSource {
    fn default() -> Self {
        Self {
            detector: String::new(),
            backbone_weights: String::new(),
            random_weights: false,
            device: "cpu".into(),
        }
    }
}

/// The temporal node's method.
#[derive(RosParams, Clone, Debug, PartialEq)]
pub struct MethodSource {
    /// Temporal method: stars, kalman, centroid, ema or passthrough (empty: stars with a refiner).
    pub method: String,
    /// Refiner checkpoint directory (`stars train refiner`) for method stars.
    pub refiner: String,
    /// Where inference runs: cpu or cuda:N.
    pub device: String,
}

impl Default for MethodSource {
    fn default() -> Self {
        Self {
            method: String::new(),
            refiner: String::new(),
            device: "cpu".into(),
        }
    }
}

/// QoS of the camera subscription.
#[derive(RosParams, Clone, Debug, PartialEq)]
pub struct ImageInput {
    /// Camera subscription reliability: best_effort (REP-2003 sensor data) or reliable.
    pub image_reliability: String,
    /// Camera subscription history depth, 1..=100.
    pub image_depth: u32,
}

impl Default for ImageInput {
    fn default() -> Self {
        Self {
            image_reliability: "best_effort".into(),
            image_depth: 5,
        }
    }
}

impl ImageInput {
    fn qos(&self, node: &str) -> Result<QosProfile> {
        let qos = QosProfile::default()
            .keep_last(self.image_depth as usize)
            .volatile();
        ensure!(
            (1..=100).contains(&self.image_depth),
            "{node}.image_depth: {} is outside 1..=100",
            self.image_depth
        );
        Ok(match self.image_reliability.as_str() {
            "best_effort" => qos.best_effort(),
            "reliable" => qos.reliable(),
            other => bail!("{node}.image_reliability: `{other}` is not best_effort or reliable"),
        })
    }
}

/// No parameters beyond the node's own.
#[derive(RosParams, Clone, Debug, Default, PartialEq)]
pub struct NoExtra {}

/// Two parameter groups declared side by side under flat names, read-only once the node
/// runs (parameters are read at start-up; changing one later would do nothing).
pub struct Declared<A, B> {
    /// The first group (the node's own parameters).
    pub a: A,
    /// The second group.
    pub b: B,
    frozen: Arc<AtomicBool>,
}

impl<A: RosParams, B: RosParams> Declared<A, B> {
    fn new(a: A, b: B) -> Self {
        Self {
            a,
            b,
            frozen: Arc::new(AtomicBool::new(false)),
        }
    }

    fn in_a(&mut self, name: &str) -> bool {
        self.a.get_parameter(name).is_ok()
    }
}

impl<A: RosParams, B: RosParams> RosParams for Declared<A, B> {
    fn register_parameters(
        &mut self,
        prefix: &str,
        _desc: Option<r2r::Parameter>,
        params: &mut r2r::indexmap::IndexMap<String, r2r::Parameter>,
    ) -> r2r::Result<()> {
        self.a.register_parameters(prefix, None, params)?;
        self.b.register_parameters(prefix, None, params)
    }

    fn get_parameter(&mut self, name: &str) -> r2r::Result<ParameterValue> {
        self.a
            .get_parameter(name)
            .or_else(|_| self.b.get_parameter(name))
    }

    fn set_parameter(&mut self, name: &str, value: &ParameterValue) -> r2r::Result<()> {
        if self.frozen.load(Ordering::Relaxed) {
            return Err(r2r::Error::ParameterValueConv {
                name: name.into(),
                msg: "parameters are read at start-up; restart the node to change it".into(),
            });
        }
        if self.in_a(name) {
            self.a.set_parameter(name, value)
        } else {
            self.b.set_parameter(name, value)
        }
    }

    fn check_parameter(&self, name: &str, value: &ParameterValue) -> r2r::Result<()> {
        self.a
            .check_parameter(name, value)
            .or_else(|_| self.b.check_parameter(name, value))
    }
}

/// Parameters shared with r2r's parameter handler.
type Shared<P> = Arc<Mutex<P>>;

/// Declared parameters and the keys a node was given that it does not declare.
type Declaration<A, B> = (Shared<Declared<A, B>>, Vec<String>);

/// Parameters every node may be given by ROS itself.
fn is_ros_standard(name: &str) -> bool {
    name == "use_sim_time" || name.starts_with("qos_overrides.")
}

/// Declares `params` on `node` (descriptions from the doc comments) and applies the params
/// file and `-p` overrides, failing on a wrong type; returns the parameters and the keys given
/// to the node that it does not declare.
fn declare<A, B>(
    node: &mut r2r::Node,
    params: Declared<A, B>,
    runtime: &tokio::runtime::Runtime,
) -> Result<Declaration<A, B>>
where
    A: RosParams + Send + 'static,
    B: RosParams + Send + 'static,
{
    let name = node.name()?;
    let frozen = params.frozen.clone();
    let shared = Arc::new(Mutex::new(params));
    let (handler, _events) = node
        .make_derived_parameter_handler(shared.clone())
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    runtime.spawn(handler);
    let given: Vec<String> = lock(&node.params).keys().cloned().collect();
    let unknown: Vec<String> = {
        let mut declared = lock(&shared);
        given
            .into_iter()
            .filter(|key| !is_ros_standard(key) && declared.get_parameter(key).is_err())
            .collect()
    };
    // Not this node's (a `-p` meant for another hosted node): keep it out of `ros2 param list`.
    let mut table = lock(&node.params);
    for key in &unknown {
        table.shift_remove(key);
    }
    drop(table);
    frozen.store(true, Ordering::Relaxed);
    Ok((shared, unknown))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Publishing

/// A ROS publisher shared by the node's task and the health task.
type SharedPublisher = Shared<r2r::PublisherUntyped>;

/// A hosted node whose publications also go to DDS.
struct Bridged {
    inner: Box<dyn Node>,
    publishers: HashMap<&'static str, SharedPublisher>,
}

impl Bridged {
    fn send(&self, outputs: &[Publication]) {
        for p in outputs {
            match self.publishers.get(p.topic) {
                Some(publisher) => publish(publisher, &p.msg, p.topic),
                None => tracing::error!(
                    "{}: published on {} which it does not declare",
                    self.inner.name(),
                    p.topic
                ),
            }
        }
    }
}

fn publish(publisher: &SharedPublisher, msg: &Msg, topic: &str) {
    let bytes = match msg {
        Msg::Image(m) => m.encode(),
        Msg::Bool(m) => m.encode(),
        Msg::Diagnostics(m) => m.encode(),
    };
    if let Err(e) = lock(publisher).publish_raw(&bytes) {
        tracing::warn!("publishing on {topic}: {e}");
    }
}

impl Node for Bridged {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn subscriptions(&self) -> Vec<&'static str> {
        self.inner.subscriptions()
    }

    fn publications(&self) -> Vec<&'static str> {
        self.inner.publications()
    }

    fn queue_depth(&self, topic: &str, depth: usize) -> usize {
        self.inner.queue_depth(topic, depth)
    }

    fn handle(&mut self, topic: &str, msg: Arc<Msg>) -> Result<Vec<Publication>> {
        let out = self.inner.handle(topic, msg)?;
        self.send(&out);
        Ok(out)
    }

    fn on_clock(&mut self, now_ns: i64) -> Vec<Publication> {
        let out = self.inner.on_clock(now_ns);
        self.send(&out);
        out
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.inner.counters()
    }
}

// ---------------------------------------------------------------------------------------------
// Start-up

/// What one hosted node needs from ROS besides its logic.
struct Hosted {
    role: Role,
    ros: r2r::Node,
    /// Camera QoS, for nodes that take frames.
    image_qos: Option<QosProfile>,
    /// Health status hardware id.
    hardware_id: String,
    /// True when its weights are placeholders (labelled in its health status).
    placeholder: bool,
    /// Depth of its input queues (its `queue_depth` parameter).
    queue_depth: usize,
}

/// One backbone per process: the feature and detector nodes of `stars_node` share it.
#[derive(Default)]
struct BackboneSlot {
    loaded: Option<(BackboneSource, Arc<dyn FeatureExtractor>)>,
}

impl BackboneSlot {
    fn get(&mut self, source: &BackboneSource, node: &str) -> Result<Arc<dyn FeatureExtractor>> {
        if let Some((first, extractor)) = &self.loaded {
            ensure!(
                first == source,
                "{node}: detector, backbone_weights, random_weights and device must equal the \
                 other model node's in one process (one backbone is shared)"
            );
            return Ok(extractor.clone());
        }
        let sources = model_sources(source, node)?;
        let meta = sources.detector_meta()?;
        let extractor = sources.open_backbone(&meta)?;
        self.loaded = Some((source.clone(), extractor.clone()));
        Ok(extractor)
    }
}

fn model_sources(source: &BackboneSource, node: &str) -> Result<ModelSources> {
    ensure!(
        !source.detector.is_empty(),
        "{node}.detector: no detector checkpoint given (launch argument detector:=DIR)"
    );
    Ok(ModelSources {
        backbone_weights: (!source.backbone_weights.is_empty())
            .then(|| source.backbone_weights.clone().into()),
        random_weights: source.random_weights,
        detector: source.detector.clone().into(),
        refiner: None,
        method: None,
        device: crate::model::device(&source.device).with_context(|| format!("{node}.device"))?,
    })
}

/// A hosted node's parameters as ROS gave them.
enum RoleParams {
    Feature(Shared<Declared<FeatureParams, Declared<BackboneSource, ImageInput>>>),
    Detector(Shared<Declared<DetectorParams, Declared<BackboneSource, ImageInput>>>),
    Temporal(Shared<Declared<TemporalParams, Declared<MethodSource, ImageInput>>>),
    Alert(Shared<Declared<AlertParams, NoExtra>>),
}

/// A created r2r node with its declared parameters and the keys it was given but lacks.
struct Created {
    role: Role,
    ros: r2r::Node,
    params: RoleParams,
    unknown: Vec<String>,
}

/// Creates the r2r node of `role` and declares its parameters.
fn create(ctx: &r2r::Context, role: Role, runtime: &tokio::runtime::Runtime) -> Result<Created> {
    let name = role.node_name();
    let mut ros = r2r::Node::create(ctx.clone(), name, DEFAULT_NAMESPACE)
        .with_context(|| format!("creating ROS node {name}"))?;
    let model = || Declared::new(BackboneSource::default(), ImageInput::default());
    let (params, unknown) = match role {
        Role::Feature => {
            let (p, u) = declare(
                &mut ros,
                Declared::new(FeatureParams::default(), model()),
                runtime,
            )?;
            (RoleParams::Feature(p), u)
        }
        Role::Detector => {
            let (p, u) = declare(
                &mut ros,
                Declared::new(DetectorParams::default(), model()),
                runtime,
            )?;
            (RoleParams::Detector(p), u)
        }
        Role::Temporal => {
            let extra = Declared::new(MethodSource::default(), ImageInput::default());
            let (p, u) = declare(
                &mut ros,
                Declared::new(TemporalParams::default(), extra),
                runtime,
            )?;
            (RoleParams::Temporal(p), u)
        }
        Role::Alert => {
            let (p, u) = declare(
                &mut ros,
                Declared::new(AlertParams::default(), NoExtra::default()),
                runtime,
            )?;
            (RoleParams::Alert(p), u)
        }
    };
    Ok(Created {
        role,
        ros,
        params,
        unknown,
    })
}

/// Fails on a parameter no hosted node declares. A key given to every node (`-p key:=v`, a
/// `/**` section) only has to be declared by one of them.
fn check_unknown(created: &[Created]) -> Result<()> {
    for c in created {
        for key in &c.unknown {
            if created.iter().all(|other| other.unknown.contains(key)) {
                bail!(
                    "{}: unknown parameter `{key}` (see docs/nodes.md for each node's parameters)",
                    c.role.node_name()
                );
            }
        }
    }
    Ok(())
}

/// Checks a created node's parameters and loads its models.
fn load(created: Created, backbone: &mut BackboneSlot) -> Result<(Hosted, Box<dyn Node>)> {
    let Created {
        role, ros, params, ..
    } = created;
    let name = role.node_name();
    let (logic, image_qos, hardware_id, placeholder, depth): (Box<dyn Node>, _, String, bool, u32) =
        match params {
            RoleParams::Feature(p) => {
                let p = lock(&p);
                p.a.validate()?;
                let qos = p.b.b.qos(name)?;
                let extractor = backbone.get(&p.b.a, name)?;
                let random = extractor.is_random();
                log_weights(name, extractor.as_ref());
                let node = FeatureNode::new(p.a.clone(), extractor)?;
                (
                    Box::new(node),
                    Some(qos),
                    p.b.a.device.clone(),
                    random,
                    p.a.queue_depth,
                )
            }
            RoleParams::Detector(p) => {
                let p = lock(&p);
                p.a.validate()?;
                let qos = p.b.b.qos(name)?;
                let extractor = backbone.get(&p.b.a, name)?;
                let (detector, _) = model_sources(&p.b.a, name)?.load_detector()?;
                let random = extractor.is_random();
                log_weights(name, extractor.as_ref());
                let node = DetectorNode::new(p.a.clone(), detector, extractor)?;
                (
                    Box::new(node),
                    Some(qos),
                    p.b.a.device.clone(),
                    random,
                    p.a.queue_depth,
                )
            }
            RoleParams::Temporal(p) => {
                let p = lock(&p);
                p.a.validate()?;
                let qos = p.b.b.qos(name)?;
                let m = &p.b.a;
                let sources = ModelSources {
                    backbone_weights: None,
                    random_weights: false,
                    detector: Default::default(),
                    refiner: (!m.refiner.is_empty()).then(|| m.refiner.clone().into()),
                    method: (!m.method.is_empty()).then(|| m.method.clone()),
                    device: crate::model::device(&m.device)
                        .with_context(|| format!("{name}.device"))?,
                };
                let method = sources
                    .open_method()
                    .with_context(|| format!("{name}.method"))?;
                r2r::log_info!(name, "temporal method: {}", method.label);
                if method.random {
                    r2r::log_warn!(
                        name,
                        "{RANDOM_BACKBONE_LABEL}: the refiner was trained on a random backbone; \
                         refined maps are placeholders"
                    );
                }
                let node = TemporalNode::new(p.a.clone(), method.method)?;
                (
                    Box::new(node),
                    Some(qos),
                    m.device.clone(),
                    method.random,
                    p.a.queue_depth,
                )
            }
            RoleParams::Alert(p) => {
                let p = lock(&p);
                p.a.validate()?;
                let node = AlertNode::new(p.a.clone()).context("alert_node.threshold_file")?;
                (
                    Box::new(node),
                    None,
                    p.a.hardware_id.clone(),
                    false,
                    p.a.queue_depth,
                )
            }
        };
    Ok((
        Hosted {
            role,
            ros,
            image_qos,
            hardware_id,
            placeholder,
            queue_depth: depth as usize,
        },
        logic,
    ))
}

fn log_weights(node: &str, extractor: &dyn FeatureExtractor) {
    r2r::log_info!(node, "backbone: {}", extractor.describe());
    if extractor.is_random() {
        r2r::log_warn!(
            node,
            "{RANDOM_BACKBONE_LABEL}: the backbone has random weights; these maps are placeholders"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Running

/// Forwards `tracing` events (the node logic's warnings) to rcutils logging, so they reach
/// the console and `/rosout` like any ROS node's.
struct RosLog {
    logger: String,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RosLog {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        // rcutils takes C strings: a NUL from a hostile message must not abort the log call
        let text = message.0.replace('\0', "\u{FFFD}");
        let logger = self.logger.as_str();
        match *event.metadata().level() {
            tracing::Level::ERROR => r2r::log_error!(logger, "{text}"),
            tracing::Level::WARN => r2r::log_warn!(logger, "{text}"),
            tracing::Level::INFO => r2r::log_info!(logger, "{text}"),
            _ => r2r::log_debug!(logger, "{text}"),
        }
    }
}

/// Runs an executable hosting `roles` until SIGINT or SIGTERM; start-up errors are one line
/// on stderr and exit code 2.
pub fn main(executable: &str, roles: &[Role]) -> ExitCode {
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(RosLog {
            logger: executable.to_string(),
        });
    let _ = tracing::subscriber::set_global_default(subscriber);
    match run(roles) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            r2r::log_error!(executable, "{line}");
            eprintln!("{executable}: error: {line}");
            ExitCode::from(2)
        }
    }
}

fn run(roles: &[Role]) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let ctx = r2r::Context::create().context("initialising ROS 2 (rcl)")?;
    let created = roles
        .iter()
        .map(|&role| create(&ctx, role, &runtime))
        .collect::<Result<Vec<_>>>()?;
    check_unknown(&created)?;
    // Models are loaded before anything subscribes: a node that cannot run never joins.
    let mut backbone = BackboneSlot::default();
    let mut hosted = Vec::new();
    let mut logic = Vec::new();
    for c in created {
        let (h, l) = load(c, &mut backbone)?;
        hosted.push(h);
        logic.push(l);
    }
    let _enter = runtime.enter();
    let (graph, inputs, health) = wire(&mut hosted, logic)?;
    let graph = Arc::new(graph);
    let mut tasks = Vec::new();
    for (topic, stream) in inputs {
        let graph = graph.clone();
        tasks.push(runtime.spawn(async move {
            let mut stream = stream;
            while let Some(bytes) = stream.next().await {
                match Image::decode(&bytes) {
                    Ok(image) => graph.publish(topic, Msg::Image(image)),
                    Err(e) => tracing::warn!("dropping a message on {topic}: {e:#}"),
                }
            }
        }));
    }
    let clock = hosted[0].ros.get_ros_clock();
    tasks.push(spawn_ticker(&runtime, graph.clone(), clock.clone()));
    tasks.push(spawn_health(&runtime, graph.clone(), clock, health));

    let stop = Arc::new(AtomicBool::new(false));
    spawn_signal_watch(&runtime, stop.clone())?;
    for h in &hosted {
        r2r::log_info!(h.role.node_name(), "running");
    }
    while !stop.load(Ordering::Relaxed) {
        for h in &mut hosted {
            h.ros.spin_once(Duration::from_millis(10));
        }
    }
    // Stop the feeders, finish what is queued, then report what each node did.
    for task in &tasks {
        task.abort();
    }
    runtime.block_on(async {
        for task in tasks {
            let _ = task.await;
        }
    });
    if let Ok(graph) = Arc::try_unwrap(graph) {
        for report in runtime.block_on(graph.stop()) {
            r2r::log_info!(
                report.name,
                "stopped: handled {}, skipped {}, errors {}",
                report.handled,
                report.total_dropped(),
                report.errors
            );
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// A raw subscription stream.
type Inputs = Vec<(
    &'static str,
    Box<dyn futures::Stream<Item = Vec<u8>> + Send + Unpin>,
)>;
/// Per hosted node: its health reporter and `/diagnostics` publisher.
type HealthTasks = Vec<(Health, SharedPublisher, &'static str, bool)>;

/// Publishers, subscriptions and the graph of the hosted nodes.
fn wire(hosted: &mut [Hosted], logic: Vec<Box<dyn Node>>) -> Result<(Graph, Inputs, HealthTasks)> {
    let local_outputs: Vec<&'static str> = logic.iter().flat_map(|n| n.publications()).collect();
    let mut subscribed: Vec<&'static str> = Vec::new();
    let mut inputs: Inputs = Vec::new();
    let mut health = Vec::new();
    let mut nodes: Vec<(Box<dyn Node>, usize)> = Vec::new();
    for (h, node) in hosted.iter_mut().zip(logic) {
        let name = h.role.node_name();
        let mut publishers = HashMap::new();
        let mut outputs = node.publications();
        if !outputs.contains(&topics::DIAGNOSTICS) {
            outputs.push(topics::DIAGNOSTICS);
        }
        for topic in outputs {
            let publisher = h
                .ros
                .create_publisher_untyped(&ros_name(topic), type_name(topic), output_qos(topic))
                .with_context(|| format!("{name}: publisher on {topic}"))?;
            publishers.insert(topic, Arc::new(Mutex::new(publisher)));
        }
        for topic in node.subscriptions() {
            if local_outputs.contains(&topic) || subscribed.contains(&topic) {
                continue;
            }
            let qos = match (topic, &h.image_qos) {
                (topics::CAMERA, Some(qos)) => qos.clone(),
                _ => QosProfile::default()
                    .reliable()
                    .volatile()
                    .keep_last(RELIABLE_DEPTH),
            };
            let stream = h
                .ros
                .subscribe_raw(&ros_name(topic), type_name(topic), qos)
                .with_context(|| format!("{name}: subscription to {topic}"))?;
            subscribed.push(topic);
            inputs.push((topic, Box::new(stream)));
        }
        let diagnostics = publishers[topics::DIAGNOSTICS].clone();
        health.push((
            Health::new(name, h.role.task(), &h.hardware_id),
            diagnostics,
            name,
            h.placeholder,
        ));
        nodes.push((
            Box::new(Bridged {
                inner: node,
                publishers,
            }),
            h.queue_depth,
        ));
    }
    Ok((Graph::start(nodes), inputs, health))
}

/// Nanoseconds of a ROS clock reading (0 when it cannot be read).
fn ros_now(clock: &Mutex<r2r::Clock>) -> i64 {
    lock(clock)
        .get_now()
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Advances the nodes' input clock from the ROS clock (simulated under `use_sim_time`); the
/// alert node's through [`WatchdogClock`].
fn spawn_ticker(
    runtime: &tokio::runtime::Runtime,
    graph: Arc<Graph>,
    clock: Arc<Mutex<r2r::Clock>>,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        let started = Instant::now();
        let mut watchdog = WatchdogClock::default();
        let mut interval = tokio::time::interval(TICK);
        loop {
            interval.tick().await;
            let ros = ros_now(&clock);
            // Only the alert's watchdog runs on through a stopped clock: the temporal node's
            // feature timeout must not fire while a player holds its clock (`--delay`, pause).
            let watched = watchdog.now(ros, started.elapsed().as_nanos() as i64);
            graph.tick_where(|name| name == Role::Alert.node_name(), watched);
            graph.tick_where(|name| name != Role::Alert.node_name(), ros);
        }
    })
}

/// Publishes each hosted node's health on `/diagnostics` about once a second.
fn spawn_health(
    runtime: &tokio::runtime::Runtime,
    graph: Arc<Graph>,
    clock: Arc<Mutex<r2r::Clock>>,
    mut tasks: HealthTasks,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        let started = Instant::now();
        let mut interval = tokio::time::interval(HEALTH_PERIOD);
        loop {
            interval.tick().await;
            let wall = started.elapsed().as_nanos() as i64;
            let stamp = Time::from_nanos(ros_now(&clock).max(0) as u64);
            let live = graph.live();
            for (health, publisher, name, placeholder) in &mut tasks {
                let counts = live
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, c)| *c)
                    .unwrap_or_default();
                let mut status = health.report(counts, wall);
                if *placeholder {
                    status.values.push(crate::msg::KeyValue {
                        key: "weights".into(),
                        value: RANDOM_BACKBONE_LABEL.into(),
                    });
                }
                let array = DiagnosticArray {
                    header: Header {
                        stamp,
                        frame_id: String::new(),
                    },
                    status: vec![status],
                };
                publish(publisher, &Msg::Diagnostics(array), topics::DIAGNOSTICS);
            }
        }
    })
}

/// Sets `stop` on SIGINT or SIGTERM (`ros2 launch` sends the first, then the second).
fn spawn_signal_watch(runtime: &tokio::runtime::Runtime, stop: Arc<AtomicBool>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let _enter = runtime.enter();
    let mut interrupt = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    runtime.spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        stop.store(true, Ordering::Relaxed);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use r2r::WrappedTypesupport;

    use super::*;
    use crate::msg::{DiagnosticStatus, Encoding, KeyValue};

    fn header() -> Header {
        Header {
            stamp: Time {
                sec: 1_767_225_600,
                nanosec: 123_456_789,
            },
            frame_id: "camera".into(),
        }
    }

    #[test]
    fn images_cross_r2r_typesupport_both_ways() {
        let ours = Image {
            header: header(),
            height: 2,
            width: 3,
            encoding: Encoding::Float32 { channels: 1 },
            is_bigendian: false,
            step: 12,
            data: (0..24u8).collect(),
        };
        let theirs = r2r::sensor_msgs::msg::Image::from_serialized_bytes(&ours.encode()).unwrap();
        assert_eq!(theirs.header.stamp.sec, 1_767_225_600);
        assert_eq!(theirs.header.stamp.nanosec, 123_456_789);
        assert_eq!(theirs.header.frame_id, "camera");
        assert_eq!((theirs.height, theirs.width, theirs.step), (2, 3, 12));
        assert_eq!(theirs.encoding, "32FC1");
        assert_eq!(theirs.data, ours.data);
        let back = Image::decode(&theirs.to_serialized_bytes().unwrap()).unwrap();
        assert_eq!(back, ours);
    }

    #[test]
    fn bools_and_diagnostics_cross_r2r_typesupport_both_ways() {
        for data in [false, true] {
            let theirs =
                r2r::std_msgs::msg::Bool::from_serialized_bytes(&Bool { data }.encode()).unwrap();
            assert_eq!(theirs.data, data);
            let back = Bool::decode(&theirs.to_serialized_bytes().unwrap()).unwrap();
            assert_eq!(back, Bool { data });
        }
        let ours = DiagnosticArray {
            header: header(),
            status: vec![DiagnosticStatus {
                level: DiagnosticStatus::STALE,
                name: "stars/alert".into(),
                message: "no refined map for 1.050 s".into(),
                hardware_id: "camera".into(),
                values: vec![KeyValue {
                    key: "active".into(),
                    value: "true".into(),
                }],
            }],
        };
        let theirs =
            r2r::diagnostic_msgs::msg::DiagnosticArray::from_serialized_bytes(&ours.encode())
                .unwrap();
        let s = &theirs.status[0];
        assert_eq!((s.level, s.name.as_str()), (3, "stars/alert"));
        assert_eq!(s.values[0].key, "active");
        let back = DiagnosticArray::decode(&theirs.to_serialized_bytes().unwrap()).unwrap();
        assert_eq!(back, ours);
    }

    #[test]
    fn topic_names_are_relative_except_diagnostics() {
        assert_eq!(ros_name(topics::CAMERA), "image");
        assert_eq!(ros_name(topics::REFINED_MAP), "refined/anomaly_map");
        assert_eq!(ros_name(topics::ALERT_ACTIVE), "alert/active");
        assert_eq!(ros_name(topics::DIAGNOSTICS), "/diagnostics");
    }
}
