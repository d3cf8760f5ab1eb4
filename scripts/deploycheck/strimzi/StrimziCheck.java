// Loads the rendered Strimzi custom resources into Strimzi's own Java API model (io.strimzi:api, the
// classes the operator itself reads them into), the way the pinned operator version would, and
// prints what it refuses. Then computes the security contexts of the pods the operator will create
// for them (Kafka nodes, entity operator), through the operator's own PodSecurityProvider, so that
// the Pod Security check of check_deploy.py can look at them like at any other pod.
//
// Run by scripts/check-deploy as `java -cp <model classpath> StrimziCheck.java PROVIDER < objects.json`
// (Java's single-file source launch, no build step). Input: a JSON list of {"where", "object"}.
// PROVIDER: "baseline" (the operator's default) or "restricted" (STRIMZI_POD_SECURITY_PROVIDER_CLASS).
// Output: JSON {"errors": [...], "pods": [{"where", "spec": {securityContext, hostUsers, containers}}]}.

import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.fabric8.kubernetes.api.model.PodSecurityContext;
import io.fabric8.kubernetes.api.model.SecurityContext;
import io.strimzi.api.kafka.model.common.Constants;
import io.strimzi.api.kafka.model.common.template.ContainerTemplate;
import io.strimzi.api.kafka.model.common.template.PodTemplate;
import io.strimzi.api.kafka.model.kafka.Kafka;
import io.strimzi.api.kafka.model.kafka.Storage;
import io.strimzi.api.kafka.model.nodepool.KafkaNodePool;
import io.strimzi.api.kafka.model.topic.KafkaTopic;
import io.strimzi.crdgenerator.annotations.PresentInVersions;
import io.strimzi.crdgenerator.annotations.RequiredInVersions;
import io.strimzi.platform.KubernetesVersion;
import io.strimzi.platform.PlatformFeatures;
import io.strimzi.plugin.security.profiles.ContainerSecurityProviderContext;
import io.strimzi.plugin.security.profiles.PodSecurityProvider;
import io.strimzi.plugin.security.profiles.PodSecurityProviderContext;
import io.strimzi.plugin.security.profiles.impl.BaselinePodSecurityProvider;
import io.strimzi.plugin.security.profiles.impl.RestrictedPodSecurityProvider;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;
import java.util.Map;

public class StrimziCheck {
    static final String VERSION = Constants.V1;
    static final String API_VERSION = Constants.RESOURCE_GROUP_NAME + "/" + VERSION;
    static final ObjectMapper MAPPER = new ObjectMapper()
            .configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, true)
            .configure(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES, true);
    static final List<String> errors = new ArrayList<>();

    public static void main(String[] args) throws Exception {
        PodSecurityProvider provider = "restricted".equals(args[0]) ? new RestrictedPodSecurityProvider() : new BaselinePodSecurityProvider();
        provider.configure(new PlatformFeatures() {
            public KubernetesVersion getKubernetesVersion() { return KubernetesVersion.MINIMAL_SUPPORTED_VERSION; }
            public boolean isOpenshift() { return false; }
        });
        List<Kafka> kafkas = new ArrayList<>();
        List<String> kafkaWheres = new ArrayList<>();
        List<KafkaNodePool> pools = new ArrayList<>();
        List<String> poolWheres = new ArrayList<>();
        for (JsonNode item : MAPPER.readTree(System.in)) {
            String where = item.get("where").asText();
            JsonNode object = item.get("object");
            String apiVersion = object.path("apiVersion").asText();
            if (!apiVersion.equals(API_VERSION)) {
                errors.add(where + ": apiVersion " + apiVersion + " is not served by this Strimzi (it serves " + API_VERSION + ")");
                continue;
            }
            Class<?> type = switch (object.path("kind").asText()) {
                case "Kafka" -> Kafka.class;
                case "KafkaNodePool" -> KafkaNodePool.class;
                case "KafkaTopic" -> KafkaTopic.class;
                default -> null;
            };
            if (type == null) {
                errors.add(where + ": kind " + object.path("kind").asText() + " is not checked here");
                continue;
            }
            Object model;
            try {
                model = MAPPER.treeToValue(object, type);
            } catch (Exception e) {
                errors.add(where + ": " + e.getMessage().split("\n")[0]);
                continue;
            }
            walk(model, where, "", 0);
            if (model instanceof Kafka k) { kafkas.add(k); kafkaWheres.add(where); }
            if (model instanceof KafkaNodePool p) { pools.add(p); poolWheres.add(where); }
        }
        ArrayNode pods = MAPPER.createArrayNode();
        for (int k = 0; k < kafkas.size(); k++) {
            Kafka kafka = kafkas.get(k);
            String cluster = kafka.getMetadata().getName();
            var kafkaTemplate = kafka.getSpec().getKafka().getTemplate();
            for (int i = 0; i < pools.size(); i++) {
                KafkaNodePool pool = pools.get(i);
                // The same cluster, in the same render ("where" starts with the render's name).
                if (!cluster.equals(pool.getMetadata().getLabels().get("strimzi.io/cluster"))
                        || !render(poolWheres.get(i)).equals(render(kafkaWheres.get(k)))) continue;
                var poolTemplate = pool.getSpec().getTemplate();
                // A node pool's own template section replaces the Kafka resource's one.
                PodTemplate pod = poolTemplate != null && poolTemplate.getPod() != null ? poolTemplate.getPod()
                        : kafkaTemplate != null ? kafkaTemplate.getPod() : null;
                ContainerTemplate container = poolTemplate != null && poolTemplate.getKafkaContainer() != null ? poolTemplate.getKafkaContainer()
                        : kafkaTemplate != null ? kafkaTemplate.getKafkaContainer() : null;
                Storage storage = pool.getSpec().getStorage();
                pods.add(pod("Kafka node pod of " + poolWheres.get(i),
                        provider.kafkaPodSecurityContext(podContext(storage, pod)),
                        provider.kafkaHostUsers(podContext(storage, pod)),
                        List.of("kafka"), Arrays.asList(provider.kafkaContainerSecurityContext(containerContext(storage, container)))));
            }
            var eo = kafka.getSpec().getEntityOperator();
            if (eo != null) {
                var t = eo.getTemplate();
                PodTemplate pod = t != null ? t.getPod() : null;
                List<String> names = new ArrayList<>();
                List<SecurityContext> contexts = new ArrayList<>();
                if (eo.getTopicOperator() != null) {
                    names.add("topic-operator");
                    contexts.add(provider.entityTopicOperatorContainerSecurityContext(containerContext(null, t != null ? t.getTopicOperatorContainer() : null)));
                }
                if (eo.getUserOperator() != null) {
                    names.add("user-operator");
                    contexts.add(provider.entityUserOperatorContainerSecurityContext(containerContext(null, t != null ? t.getUserOperatorContainer() : null)));
                }
                pods.add(pod("entity operator pod of " + kafkaWheres.get(k),
                        provider.entityOperatorPodSecurityContext(podContext(null, pod)),
                        provider.entityOperatorHostUsers(podContext(null, pod)), names, contexts));
            }
            if (kafka.getSpec().getKafkaExporter() != null || kafka.getSpec().getCruiseControl() != null) {
                errors.add(kafkaWheres.get(k) + ": Kafka Exporter and Cruise Control pods are not checked here; add them to StrimziCheck.java");
            }
        }
        ObjectNode out = MAPPER.createObjectNode();
        out.set("errors", MAPPER.valueToTree(errors));
        out.set("pods", pods);
        System.out.println(MAPPER.writeValueAsString(out));
    }

    static String render(String where) {
        return where.substring(0, Math.max(0, where.lastIndexOf(' ')));
    }

    static PodSecurityProviderContext podContext(Storage storage, PodTemplate template) {
        return new PodSecurityProviderContext() {
            public Storage storage() { return storage; }
            public PodSecurityContext userSuppliedSecurityContext() { return template != null ? template.getSecurityContext() : null; }
            public Boolean userSuppliedHostUsers() { return template != null ? template.getHostUsers() : null; }
        };
    }

    static ContainerSecurityProviderContext containerContext(Storage storage, ContainerTemplate template) {
        return new ContainerSecurityProviderContext() {
            public Storage storage() { return storage; }
            public SecurityContext userSuppliedSecurityContext() { return template != null ? template.getSecurityContext() : null; }
        };
    }

    static ObjectNode pod(String where, PodSecurityContext podContext, Boolean hostUsers, List<String> names, List<SecurityContext> contexts) {
        ObjectNode spec = MAPPER.createObjectNode();
        if (podContext != null) spec.set("securityContext", MAPPER.valueToTree(podContext));
        if (hostUsers != null) spec.put("hostUsers", hostUsers);
        ArrayNode containers = spec.putArray("containers");
        for (int i = 0; i < names.size(); i++) {
            ObjectNode c = containers.addObject().put("name", names.get(i));
            if (contexts.get(i) != null) c.set("securityContext", MAPPER.valueToTree(contexts.get(i)));
        }
        ObjectNode pod = MAPPER.createObjectNode().put("where", where);
        pod.set("spec", spec);
        return pod;
    }

    // Every property the model keeps aside as unknown (Strimzi's and fabric8's classes keep them in
    // additionalProperties instead of failing), every property required in VERSION that is missing,
    // and every property that VERSION does not have.
    static void walk(Object node, String where, String path, int depth) throws Exception {
        if (node == null || depth > 40 || node instanceof String || node instanceof Number || node instanceof Boolean || node instanceof Enum) return;
        if (node instanceof Map<?, ?> map) {
            for (var e : map.entrySet()) walk(e.getValue(), where, path + "." + e.getKey(), depth + 1);
            return;
        }
        if (node instanceof Collection<?> list) {
            int i = 0;
            for (Object o : list) walk(o, where, path + "[" + i++ + "]", depth + 1);
            return;
        }
        String pkg = node.getClass().getPackageName();
        if (!pkg.startsWith("io.strimzi") && !pkg.startsWith("io.fabric8")) return;
        for (Method m : node.getClass().getMethods()) {
            if (m.getParameterCount() != 0 || m.isBridge() || m.isSynthetic() || Modifier.isStatic(m.getModifiers())) continue;
            String name = m.getName();
            if (name.equals("getClass") || !(name.startsWith("get") && name.length() > 3)) continue;
            Object value = m.invoke(node);
            String property = Character.toLowerCase(name.charAt(3)) + name.substring(4);
            JsonProperty jp = m.getAnnotation(JsonProperty.class);
            if (jp != null && !jp.value().isEmpty()) property = jp.value();
            if (name.equals("getAdditionalProperties")) {
                if (value instanceof Map<?, ?> extra && !extra.isEmpty()) {
                    errors.add(where + ": unknown propert" + (extra.size() == 1 ? "y " : "ies ") + extra.keySet() + " at " + (path.isEmpty() ? "." : path));
                }
                continue;
            }
            RequiredInVersions required = m.getAnnotation(RequiredInVersions.class);
            if (value == null && ((jp != null && jp.required()) || (required != null && inVersion(required.value())))) {
                errors.add(where + ": " + path + "." + property + " is required");
            }
            PresentInVersions present = m.getAnnotation(PresentInVersions.class);
            if (value != null && present != null && !inVersion(present.value())) {
                errors.add(where + ": " + path + "." + property + " does not exist in " + VERSION);
            }
            walk(value, where, path + "." + property, depth + 1);
        }
    }

    // Strimzi's version ranges: "v1beta2", "v1beta2+", "v1beta2-v1", "all".
    static boolean inVersion(String spec) {
        for (String range : spec.split(",")) {
            range = range.trim();
            if (range.equals("all") || range.equals(VERSION) || range.equals("v1+") || range.equals("v1beta2+") || range.endsWith("-v1")) return true;
        }
        return false;
    }
}
