// Tiny admin helper for deploy/local: one JVM start instead of one per topic.
// Compiled on demand by lib.sh (javac) into .local/cache/tools and run with the
// Kafka jars on the classpath.
//
//   java -cp '<kafka-libs>/*:<tools>' LocalKafkaAdmin wait BOOTSTRAP TIMEOUT_S
//   java -cp ... LocalKafkaAdmin ensure BOOTSTRAP TIMEOUT_S PARTITIONS TOPIC[=k:v,k:v]...
//
// "wait" returns 0 once a metadata request (describeCluster + listTopics)
// succeeds, 1 on timeout. "ensure" first waits, then creates every missing
// topic with replication factor 1 (already existing topics are left alone).
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.errors.TopicExistsException;

public final class LocalKafkaAdmin {
    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: LocalKafkaAdmin wait|ensure BOOTSTRAP TIMEOUT_S [PARTITIONS TOPIC[=k:v,...]...]");
            System.exit(2);
        }
        String mode = args[0];
        String bootstrap = args[1];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[2]));

        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, "200");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        props.put(AdminClientConfig.CLIENT_ID_CONFIG, "lastseen-deploy-local");

        try (Admin admin = Admin.create(props)) {
            Set<String> existing = null;
            Exception last = null;
            while (System.nanoTime() < deadline) {
                try {
                    admin.describeCluster().nodes().get(3, TimeUnit.SECONDS);
                    existing = admin.listTopics(new ListTopicsOptions().listInternal(false))
                            .names().get(3, TimeUnit.SECONDS);
                    break;
                } catch (Exception e) {
                    last = e;
                    Thread.sleep(250);
                }
            }
            if (existing == null) {
                System.err.println("kafka at " + bootstrap + " not answering: " + last);
                System.exit(1);
            }
            if (mode.equals("wait")) {
                return;
            }
            if (!mode.equals("ensure") || args.length < 4) {
                System.err.println("unknown mode or missing PARTITIONS: " + mode);
                System.exit(2);
            }
            int partitions = Integer.parseInt(args[3]);
            List<NewTopic> toCreate = new ArrayList<>();
            for (int i = 4; i < args.length; i++) {
                String[] nameAndConf = args[i].split("=", 2);
                String name = nameAndConf[0];
                if (existing.contains(name)) {
                    continue;
                }
                Map<String, String> configs = new HashMap<>();
                if (nameAndConf.length == 2 && !nameAndConf[1].isEmpty()) {
                    for (String kv : nameAndConf[1].split(",")) {
                        String[] p = kv.split(":", 2);
                        configs.put(p[0], p[1]);
                    }
                }
                toCreate.add(new NewTopic(name, partitions, (short) 1).configs(configs));
            }
            if (toCreate.isEmpty()) {
                return;
            }
            Map<String, KafkaFuture<Void>> futures = admin.createTopics(toCreate).values();
            for (NewTopic t : toCreate) {
                try {
                    futures.get(t.name()).get(10, TimeUnit.SECONDS);
                    System.out.println("created " + t.name() + " partitions=" + partitions
                            + (t.configs().isEmpty() ? "" : " " + t.configs()));
                } catch (ExecutionException e) {
                    if (e.getCause() instanceof TopicExistsException) {
                        continue;
                    }
                    throw e;
                }
            }
        }
    }
}
