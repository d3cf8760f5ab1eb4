// The broker that leads the most partitions of a topic: `java -cp 'LIBS/*' Leaders.java BOOTSTRAP TOPIC`
// prints its node id (the failover scenarios SIGKILL it). With a third argument NODE it polls until
// every partition has a leader other than NODE and prints that instant (Unix seconds), or exits 1
// after two minutes. Run as a single-file program with the Kafka jars that scripts/services installs.

import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.TopicDescription;

public class Leaders {
    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        config.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        config.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        try (Admin admin = Admin.create(config)) {
            if (args.length > 2) {
                int away = Integer.parseInt(args[2]);
                long deadline = System.currentTimeMillis() + 120_000;
                while (System.currentTimeMillis() < deadline) {
                    TopicDescription topic = admin.describeTopics(List.of(args[1])).allTopicNames().get().get(args[1]);
                    boolean moved = topic.partitions().stream()
                        .allMatch(p -> p.leader() != null && p.leader().id() != away);
                    if (moved) {
                        System.out.println(System.currentTimeMillis() / 1000.0);
                        return;
                    }
                    Thread.sleep(200);
                }
                System.exit(1);
            }
            TopicDescription topic = admin.describeTopics(List.of(args[1])).allTopicNames().get().get(args[1]);
            Map<Integer, Integer> led = new TreeMap<>();
            topic.partitions().forEach(p -> {
                if (p.leader() != null) {
                    led.merge(p.leader().id(), 1, Integer::sum);
                }
            });
            int best = led.entrySet().stream().max(Map.Entry.comparingByValue()).orElseThrow().getKey();
            System.err.println("leaders of " + args[1] + " (node=partitions): " + led);
            System.out.println(best);
        }
    }
}
